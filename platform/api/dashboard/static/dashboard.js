/* moeplane admin: draws each [data-chart] from the admin JSON it names (data-src) and refreshes
 * it every data-refresh seconds while the tab is visible; fills the Ray cluster card. */
(function () {
  "use strict";

  var C = window.MoeCharts;

  function getJSON(url) {
    return fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) {
        if (r.status === 401) throw new Error("Your session has expired: reload the page to log in.");
        if (!r.ok) throw new Error("Could not load the data (HTTP " + r.status + ").");
        return r.json();
      });
  }

  function perMinute(points, pick) {
    return points.map(function (p) { return [p.t, pick(p)]; });
  }

  var RENDER = {
    requests: function (plot, d) {
      C.line(plot, {
        series: [{ name: "requests", points: perMinute(d.points, function (p) { return p.requests; }) }],
        x: { type: "time", label: "time (UTC)" },
        y: { label: "requests / min", unit: "req/min" },
        empty: "No inference requests in the last hour."
      });
    },
    tokens: function (plot, d) {
      C.line(plot, {
        series: [
          { name: "completion tokens/s", points: perMinute(d.points, function (p) { return p.tokens_per_s; }) },
          { name: "prompt tokens/s", points: perMinute(d.points, function (p) { return p.prompt_tokens / d.bucket_s; }) }
        ],
        x: { type: "time", label: "time (UTC)" },
        y: { label: "tokens / s", unit: "tok/s" },
        empty: "No tokens generated in the last hour."
      });
    },
    latency: function (plot, d) {
      C.line(plot, {
        series: [
          { name: "p50", points: perMinute(d.points, function (p) { return p.latency_p50_ms; }) },
          { name: "p95", points: perMinute(d.points, function (p) { return p.latency_p95_ms; }) }
        ],
        x: { type: "time", label: "time (UTC)" },
        y: { label: "latency (ms)", unit: "ms" },
        empty: "No requests in the last hour, so no latency to show."
      });
    },
    loss: function (plot, d) {
      var series = [{ name: "train loss", points: d.points.map(function (p) { return [p.step, p.train_loss]; }) }];
      if (d.points.some(function (p) { return p.valid_loss !== null; })) {
        series.push({ name: "validation loss", points: d.points.map(function (p) { return [p.step, p.valid_loss]; }) });
      }
      C.line(plot, {
        series: series,
        zeroIsData: true,
        marks: d.checkpoints,
        x: { type: "linear", label: "step" + (d.total_steps ? " (of " + d.total_steps + ")" : "") +
             (d.checkpoints.length ? " · dashed: checkpoints" : ""), name: "step" },
        y: { label: "loss", fit: true },
        empty: d.status === "queued" || d.status === "validating_files"
          ? "The job is " + d.status.replace("_", " ") + ": the loss curve appears once training reports its first step."
          : "No training metrics were reported for this job."
      });
    },
    usage: function (plot, d) {
      var days = d.days.map(function (s) { return Date.parse(s + "T00:00:00Z") / 1000; });
      C.line(plot, {
        series: Object.keys(d.series).map(function (kind) {
          return { name: kind, points: d.series[kind].map(function (v, i) { return [days[i], v]; }) };
        }),
        x: { type: "day", label: "day (UTC)" },
        y: { label: "amount / day" },
        empty: "No usage recorded in the last " + d.days.length + " days."
      });
    },
    experts: function (plot, d) {
      C.heatmap(plot, {
        rows: d.load, counts: d.counts, rowLabel: "MoE layer", colLabel: "expert",
        empty: "No routing statistics yet: replicas report them once they serve requests."
      });
    }
  };

  function loadChart(fig) {
    var plot = fig.querySelector(".plot");
    var render = RENDER[fig.dataset.chart];
    return getJSON(fig.dataset.src).then(function (d) {
      render(plot, d);
      fig.dataset.state = "ready";
    }).catch(function (err) {
      C.empty(plot, err.message);
      fig.dataset.state = "error";
    });
  }

  function resourceLine(list, r) {
    var li = document.createElement("li");
    var pct = r.total > 0 ? Math.min(100, r.used / r.total * 100) : 0;
    li.textContent = r.name + ": " + C.short(r.used) + " of " + C.short(r.total) + " " + r.unit +
      " in use (" + pct.toFixed(0) + "%)";
    var bar = document.createElement("div");
    bar.className = "bar";
    var fill = document.createElement("span");
    fill.style.width = pct.toFixed(1) + "%";
    bar.appendChild(fill);
    li.appendChild(bar);
    list.appendChild(li);
  }

  function loadCluster(card) {
    var body = card.querySelector(".body");
    return getJSON(card.dataset.src).then(function (d) {
      while (body.firstChild) body.removeChild(body.firstChild);
      var head = document.createElement("p");
      if (!d.reachable) {
        head.className = "big bad";
        head.textContent = "Ray unreachable";
        body.appendChild(head);
        var why = document.createElement("p");
        why.className = "muted";
        why.textContent = (d.error || "") + " — fine-tuning and serving wait until it is back.";
        body.appendChild(why);
        card.dataset.state = "unreachable";
        return;
      }
      head.className = "muted";
      head.textContent = (d.nodes !== null ? d.nodes + " node" + (d.nodes === 1 ? "" : "s") : "Ray is up") +
        (d.pending_demand ? " · " + d.pending_demand + " resource requests waiting" : "");
      body.appendChild(head);
      if (d.error) {
        var note = document.createElement("p");
        note.className = "muted";
        note.textContent = d.error;
        body.appendChild(note);
      }
      var list = document.createElement("ul");
      list.className = "resources";
      d.resources.forEach(function (r) { resourceLine(list, r); });
      body.appendChild(list);
      card.dataset.state = "ready";
    }).catch(function (err) {
      body.textContent = err.message;
      card.dataset.state = "error";
    });
  }

  function every(node, load) {
    load(node);
    var seconds = parseInt(node.dataset.refresh || "0", 10);
    if (seconds > 0) {
      setInterval(function () { if (!document.hidden) load(node); }, seconds * 1000);
    }
  }

  function copyButtons() {
    document.querySelectorAll("button[data-copy]").forEach(function (button) {
      button.addEventListener("click", function () {
        var text = document.getElementById(button.dataset.copy).textContent;
        if (navigator.clipboard && window.isSecureContext) {
          navigator.clipboard.writeText(text).then(function () { button.textContent = "Copied"; },
            function () { button.textContent = "Select and copy"; });
        } else {
          button.textContent = "Select and copy";
        }
      });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-chart]").forEach(function (fig) { every(fig, loadChart); });
    document.querySelectorAll("[data-widget=cluster]").forEach(function (card) { every(card, loadCluster); });
    copyButtons();
  });
})();
