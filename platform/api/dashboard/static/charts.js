/* moeplane charts: small hand-written SVG line charts and heatmaps, no dependencies.
 *
 *   MoeCharts.line(container, {series: [{name, color, points: [[x, y|null], ...]}],
 *                              x: {type: "time" | "day" | "linear", label}, y: {label},
 *                              marks: [x, ...], empty: "text when there is nothing to draw"})
 *   MoeCharts.heatmap(container, {rows: [[value, ...], ...], counts, rowLabel, colLabel,
 *                                 empty})
 *
 * Everything is built with createElementNS / textContent: data never becomes markup.
 */
(function () {
  "use strict";

  var SVG = "http://www.w3.org/2000/svg";
  var H = 240, M = { l: 62, r: 16, t: 12, b: 40 };
  var PALETTE = ["#1f6feb", "#e8710a", "#2e7d32", "#9334e6", "#c62828", "#00838f", "#6d4c41"];

  function svgEl(tag, attrs, parent) {
    var node = document.createElementNS(SVG, tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (parent) parent.appendChild(node);
    return node;
  }

  function htmlEl(tag, className, parent, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    if (parent) parent.appendChild(node);
    return node;
  }

  function clear(container) {
    while (container.firstChild) container.removeChild(container.firstChild);
  }

  function empty(container, text) {
    clear(container);
    htmlEl("p", "empty", container, text);
  }

  /* 1, 2, 5 x 10^n steps covering [min, max] with about `count` ticks. */
  function ticks(min, max, count) {
    if (!(max > min)) { max = min + 1; }
    var raw = (max - min) / Math.max(1, count);
    var mag = Math.pow(10, Math.floor(Math.log10(raw)));
    var step = [1, 2, 2.5, 5, 10].map(function (f) { return f * mag; })
      .find(function (s) { return s >= raw; }) || 10 * mag;
    var out = [];
    for (var v = Math.ceil(min / step) * step; v <= max + step * 1e-9; v += step) {
      out.push(Math.round(v / step) * step);
    }
    return out;
  }

  function short(n) {
    if (n === null || n === undefined || isNaN(n)) return "–";
    var a = Math.abs(n);
    if (a >= 1e9) return (n / 1e9).toFixed(a >= 1e10 ? 0 : 1) + "G";
    if (a >= 1e6) return (n / 1e6).toFixed(a >= 1e7 ? 0 : 1) + "M";
    if (a >= 1e4) return (n / 1e3).toFixed(a >= 1e5 ? 0 : 1) + "k";
    if (a >= 100 || Number.isInteger(n)) return String(Math.round(n));
    if (a >= 1) return n.toFixed(2).replace(/\.?0+$/, "");
    return n.toPrecision(3).replace(/\.?0+$/, "");
  }

  function pad(n) { return (n < 10 ? "0" : "") + n; }

  function xLabel(type, v) {
    if (type === "time") {
      var d = new Date(v * 1000);
      return pad(d.getUTCHours()) + ":" + pad(d.getUTCMinutes());
    }
    if (type === "day") {
      var day = new Date(v * 1000);
      return pad(day.getUTCMonth() + 1) + "-" + pad(day.getUTCDate());
    }
    return short(v);
  }

  function timeTicks(min, max, type) {
    var unit = type === "day" ? 86400 : 60;
    var span = (max - min) / unit;
    var choices = type === "day" ? [1, 2, 5, 7, 14, 30] : [1, 2, 5, 10, 15, 30, 60, 120, 360];
    var step = (choices.find(function (c) { return span / c <= 8; }) || choices[choices.length - 1]) * unit;
    var out = [];
    for (var v = Math.ceil(min / step) * step; v <= max; v += step) out.push(v);
    return out;
  }

  function legend(container, series) {
    if (series.length < 2) return;
    var box = htmlEl("div", "legend", container);
    series.forEach(function (s) {
      var item = htmlEl("span", "", box);
      var sw = htmlEl("span", "swatch", item);
      sw.style.background = s.color;
      item.appendChild(document.createTextNode(s.name));
    });
  }

  function line(container, opts) {
    var series = (opts.series || []).map(function (s, i) {
      return { name: s.name, color: s.color || PALETTE[i % PALETTE.length], points: s.points || [] };
    });
    var all = [];
    series.forEach(function (s) { s.points.forEach(function (p) { if (p[1] !== null && isFinite(p[1])) all.push(p); }); });
    var xs = [];
    series.forEach(function (s) { s.points.forEach(function (p) { xs.push(p[0]); }); });
    var hasValue = all.some(function (p) { return p[1] !== 0; }) || opts.zeroIsData;
    if (!all.length || !hasValue) { empty(container, opts.empty || "No data yet."); return; }

    clear(container);
    legend(container, series);
    /* draw at the container's own width, so text keeps its size on any screen */
    var W = Math.max(360, Math.round(container.clientWidth || 720));
    var xType = (opts.x && opts.x.type) || "linear";
    var xmin = Math.min.apply(null, xs), xmax = Math.max.apply(null, xs);
    if (xmax === xmin) { xmin -= 1; xmax += 1; }
    var ys = all.map(function (p) { return p[1]; });
    var ymin = Math.min(0, Math.min.apply(null, ys));
    var ymax = Math.max.apply(null, ys);
    if (opts.y && opts.y.fit) {  /* loss curves: fit the data, do not start at zero */
      ymin = Math.min.apply(null, ys);
      var padY = (ymax - ymin) * 0.08 || Math.abs(ymax) * 0.1 || 1;
      ymin -= padY; ymax += padY;
    }
    var yt = ticks(ymin, ymax, 5);
    ymin = Math.min(ymin, yt[0]); ymax = Math.max(ymax, yt[yt.length - 1]);
    if (ymax === ymin) ymax = ymin + 1;
    var pw = W - M.l - M.r, ph = H - M.t - M.b;
    function X(v) { return M.l + (v - xmin) / (xmax - xmin) * pw; }
    function Y(v) { return M.t + ph - (v - ymin) / (ymax - ymin) * ph; }

    var svg = svgEl("svg", { viewBox: "0 0 " + W + " " + H, role: "img",
      "aria-label": (opts.y && opts.y.label) || "chart" }, container);
    yt.forEach(function (v) {
      svgEl("line", { x1: M.l, x2: W - M.r, y1: Y(v), y2: Y(v), class: "grid" }, svg);
      svgEl("text", { x: M.l - 6, y: Y(v) + 4, "text-anchor": "end" }, svg).textContent = short(v);
    });
    var xt = xType === "linear" ? ticks(xmin, xmax, 8).filter(function (v) { return v >= xmin && v <= xmax; })
      : timeTicks(xmin, xmax, xType);
    xt.forEach(function (v) {
      svgEl("line", { x1: X(v), x2: X(v), y1: M.t + ph, y2: M.t + ph + 4, class: "axis" }, svg);
      svgEl("text", { x: X(v), y: M.t + ph + 16, "text-anchor": "middle" }, svg).textContent = xLabel(xType, v);
    });
    svgEl("line", { x1: M.l, x2: W - M.r, y1: M.t + ph, y2: M.t + ph, class: "axis" }, svg);
    svgEl("line", { x1: M.l, x2: M.l, y1: M.t, y2: M.t + ph, class: "axis" }, svg);
    if (opts.x && opts.x.label) {
      svgEl("text", { x: M.l + pw / 2, y: H - 4, "text-anchor": "middle" }, svg).textContent = opts.x.label;
    }
    if (opts.y && opts.y.label) {
      svgEl("text", { x: 12, y: M.t + ph / 2, "text-anchor": "middle",
        transform: "rotate(-90 12 " + (M.t + ph / 2) + ")" }, svg).textContent = opts.y.label;
    }
    (opts.marks || []).forEach(function (m) {
      if (m < xmin || m > xmax) return;
      svgEl("line", { x1: X(m), x2: X(m), y1: M.t, y2: M.t + ph, stroke: "#b0bccb",
        "stroke-dasharray": "3 3" }, svg);
    });
    series.forEach(function (s) {
      var d = "", pen = false;
      s.points.forEach(function (p) {
        if (p[1] === null || !isFinite(p[1])) { pen = false; return; }
        d += (pen ? "L" : "M") + X(p[0]).toFixed(1) + " " + Y(p[1]).toFixed(1);
        pen = true;
      });
      svgEl("path", { d: d, fill: "none", stroke: s.color, "stroke-width": 2,
        "stroke-linejoin": "round", "stroke-linecap": "round" }, svg);
      var shown = s.points.filter(function (p) { return p[1] !== null && isFinite(p[1]); });
      if (shown.length <= 40) {
        shown.forEach(function (p) {
          svgEl("circle", { cx: X(p[0]), cy: Y(p[1]), r: 2.5, fill: s.color }, svg);
        });
      }
    });
    hover(container, svg, series, X, xType, opts, W);
  }

  function hover(container, svg, series, X, xType, opts, W) {
    var tip = htmlEl("div", "hover", container);
    var guide = svgEl("line", { y1: M.t, y2: H - M.b, stroke: "#5f6b7a", "stroke-width": 1,
      visibility: "hidden" }, svg);
    var xs = series[0].points.map(function (p) { return p[0]; });
    svg.addEventListener("mousemove", function (ev) {
      var box = svg.getBoundingClientRect();
      var vx = (ev.clientX - box.left) / box.width * W;
      var best = 0;
      xs.forEach(function (x, i) { if (Math.abs(X(x) - vx) < Math.abs(X(xs[best]) - vx)) best = i; });
      if (!xs.length) return;
      guide.setAttribute("x1", X(xs[best])); guide.setAttribute("x2", X(xs[best]));
      guide.setAttribute("visibility", "visible");
      var unit = (opts.y && opts.y.unit) ? " " + opts.y.unit : "";
      var parts = [(opts.x && opts.x.name ? opts.x.name + " " : "") + xLabel(xType, xs[best])];
      series.forEach(function (s) {
        var p = s.points[best];
        parts.push(s.name + ": " + (p && p[1] !== null ? short(p[1]) + unit : "–"));
      });
      tip.textContent = parts.join("  ·  ");
      tip.style.display = "block";
      var left = (ev.clientX - box.left) + 12;
      tip.style.left = Math.min(left, box.width - tip.offsetWidth - 4) + "px";
      tip.style.top = "4px";
    });
    svg.addEventListener("mouseleave", function () {
      tip.style.display = "none";
      guide.setAttribute("visibility", "hidden");
    });
  }

  /* white -> deep blue, by value / max */
  function shade(f) {
    f = Math.max(0, Math.min(1, f));
    var from = [243, 247, 251], to = [13, 71, 161];
    var c = from.map(function (a, i) { return Math.round(a + (to[i] - a) * f); });
    return "rgb(" + c.join(",") + ")";
  }

  function heatmap(container, opts) {
    var rows = opts.rows || [];
    var cols = rows.reduce(function (n, r) { return Math.max(n, r.length); }, 0);
    if (!rows.length || !cols) { empty(container, opts.empty || "No data yet."); return; }
    clear(container);
    var max = 0;
    rows.forEach(function (r) { r.forEach(function (v) { max = Math.max(max, v); }); });
    var room = Math.max(360, container.clientWidth || 720);
    var cell = Math.max(8, Math.min(48, Math.floor((room - 70 - 20) / cols)));
    var rowH = Math.max(12, Math.min(28, cell));
    var left = 70, top = 8;
    var width = Math.min(room, Math.max(left + cols * cell + 20, left + 520));
    var height = top + rows.length * rowH + 70;
    var svg = svgEl("svg", { viewBox: "0 0 " + width + " " + height, width: width, height: height,
      class: "heat", role: "img", "aria-label": "expert load heatmap" }, container);
    var label = opts.colLabel || "column", rowLabel = opts.rowLabel || "row";
    rows.forEach(function (r, i) {
      svgEl("text", { x: left - 8, y: top + i * rowH + rowH / 2 + 4, "text-anchor": "end" }, svg)
        .textContent = String(i);
      r.forEach(function (v, j) {
        var rect = svgEl("rect", { x: left + j * cell, y: top + i * rowH, width: cell - 1,
          height: rowH - 1, fill: shade(max ? v / max : 0) }, svg);
        var count = opts.counts && opts.counts[i] ? opts.counts[i][j] : null;
        svgEl("title", {}, rect).textContent = rowLabel + " " + i + ", " + label + " " + j + ": " +
          (v * 100).toFixed(1) + "%" + (count !== null ? " (" + short(count) + " tokens)" : "");
      });
    });
    var step = cols > 32 ? 8 : cols > 16 ? 4 : cols > 8 ? 2 : 1;
    for (var j = 0; j < cols; j += step) {
      svgEl("text", { x: left + j * cell + cell / 2, y: top + rows.length * rowH + 14,
        "text-anchor": "middle" }, svg).textContent = String(j);
    }
    var bottom = top + rows.length * rowH;
    svgEl("text", { x: left + cols * cell / 2, y: bottom + 30, "text-anchor": "middle" }, svg)
      .textContent = label;
    svgEl("text", { x: 14, y: top + rows.length * rowH / 2, "text-anchor": "middle",
      transform: "rotate(-90 14 " + (top + rows.length * rowH / 2) + ")" }, svg).textContent = rowLabel;
    /* colour scale */
    var gid = "g" + Math.random().toString(36).slice(2);
    var grad = svgEl("linearGradient", { id: gid }, svgEl("defs", {}, svg));
    svgEl("stop", { offset: "0", "stop-color": shade(0) }, grad);
    svgEl("stop", { offset: "1", "stop-color": shade(1) }, grad);
    var ly = bottom + 42;
    svgEl("rect", { x: left, y: ly, width: 160, height: 10, fill: "url(#" + gid + ")",
      stroke: "#c5cfdb" }, svg);
    svgEl("text", { x: left, y: ly + 24 }, svg).textContent = "0%";
    svgEl("text", { x: left + 160, y: ly + 24, "text-anchor": "end" }, svg).textContent =
      (max * 100).toFixed(1) + "%";
    if (cols) {
      svgEl("text", { x: left + 172, y: ly + 9 }, svg).textContent =
        "share of the layer's tokens (even split: " + (100 / cols).toFixed(1) + "%)";
    }
  }

  window.MoeCharts = { line: line, heatmap: heatmap, empty: empty, short: short };
})();
