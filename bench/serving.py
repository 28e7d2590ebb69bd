"""Serving throughput and latency, measured side by side in one run.

Same model (qwen3-moe-tiny, random weights, real tokenizer), same prompts, greedy, fixed
max_tokens:
  (a) transformers `generate` in-process, one request at a time (what a naive server does);
  (b) a Serve deployment with expert_shards = 1 (continuous batching);
  (c) the same with expert_shards = 2 (a gang of two shard actors, gloo all-reduce per MoE layer);
at 1, 8 and 32 concurrent streams: tokens/s, p50/p99 request latency. Then the gateway's added
latency: the API's POST /v1/chat/completions (auth, limits, tokenising, SSE-free JSON) over a
direct Serve handle call with the same request, p50 of max_tokens=1 calls.

Run: .venv/bin/python bench/serving.py [--max-tokens 32] [--streams 1,8,32]
It starts its own local Ray (2 CPUs) and stops it at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path[:] = [p for p in sys.path if not p.endswith("/bench")]  # bench/kernels.py shadows
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
import torch

from moeplane.modeling import create_base_checkpoint, load_model
from moeplane.serving.spec import Autoscaling, Resources, ServingSpec

PROMPTS = [
    "Where is my order?",
    "How do I return a pair of shoes?",
    "Do you ship to Norway?",
    "My package arrived damaged, what now?",
]


def _percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def _row(name: str, streams: int, latencies: list[float], tokens: int, wall: float) -> dict:
    return {
        "setup": name,
        "streams": streams,
        "requests": len(latencies),
        "tok/s": tokens / wall,
        "p50 ms": 1000 * statistics.median(latencies),
        "p99 ms": 1000 * _percentile(latencies, 0.99),
    }


def bench_generate(path: Path, tokenizer, streams: int, per_stream: int, max_tokens: int) -> dict:
    """(a) in-process generate, requests served one at a time in arrival order."""
    torch.set_num_threads(2)
    model = load_model(str(path))
    lock = threading.Lock()
    latencies: list[float] = []
    tokens = [0]

    def client(i: int) -> None:
        for j in range(per_stream):
            ids = tokenizer.apply_chat_template(
                [{"role": "user", "content": PROMPTS[(i + j) % len(PROMPTS)]}],
                add_generation_prompt=True,
                return_tensors="pt",
            )
            ids = ids["input_ids"] if hasattr(ids, "keys") else ids
            start = time.perf_counter()
            with lock, torch.inference_mode():
                out = model.generate(ids, max_new_tokens=max_tokens, do_sample=False)
            latencies.append(time.perf_counter() - start)
            tokens[0] += out.shape[1] - ids.shape[1]

    threads = [threading.Thread(target=client, args=(i,)) for i in range(streams)]
    wall = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return _row(
        "(a) generate in-process", streams, latencies, tokens[0], time.perf_counter() - wall
    )


async def _serve_load(handle, tokenizer, streams, per_stream, max_tokens, name) -> dict:
    latencies: list[float] = []
    tokens = [0]

    async def client(i: int) -> None:
        for j in range(per_stream):
            ids = tokenizer.apply_chat_template(
                [{"role": "user", "content": PROMPTS[(i + j) % len(PROMPTS)]}],
                add_generation_prompt=True,
                tokenize=True,
            )
            ids = ids["input_ids"] if hasattr(ids, "keys") else ids
            payload = {
                "request_id": f"req-bench-{name[:3]}-{streams}-{i}-{j}-{time.monotonic_ns()}",
                "tenant_id": "ten-bench",
                "prompt_ids": list(ids),
                "max_tokens": max_tokens,
                "sampling": {"temperature": 0.0},
                "stop": [],
            }
            start = time.perf_counter()
            last = None
            async for chunk in handle.generate.remote(payload):
                last = chunk
            latencies.append(time.perf_counter() - start)
            tokens[0] += last["completion_tokens"]

    wall = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(streams)))
    return _row(name, streams, latencies, tokens[0], time.perf_counter() - wall)


def _spec(path: Path, db_url: str, shards: int, name: str) -> ServingSpec:
    return ServingSpec(
        deployment_id=f"dep-bench-{name}",
        tenant_id="ten-bench",
        generation=1,
        model="qwen3-moe-tiny",
        model_version_id="mv-bench",
        artifact_uri=path.as_uri(),
        family="qwen3_moe",
        expert_shards=shards,
        max_batch_size=32,
        autoscaling=Autoscaling(min_replicas=1, max_replicas=1),
        resources=Resources(cpus_per_shard=2.0 if shards == 1 else 0.9),
        database_url=db_url,
    )


def _gateway_latency(tmp: Path, db_url: str, handle, path: Path, n: int) -> tuple[float, float]:
    """p50 of the API route vs the direct handle for the same max_tokens=1 request."""
    import uvicorn

    from moeplane.api.app import create_app
    from moeplane.config import Settings
    from moeplane.limits import MemoryLimiter
    from moeplane.store.db import Database
    from moeplane.store.models import Deployment
    from moeplane.store.registry import ensure_model, register_version
    from tests.factories import make_tenant

    db = Database(db_url)
    tenant = make_tenant(db, name="bench", rpm=1_000_000, tpm=100_000_000)
    with db.session() as session:
        model = ensure_model(
            session,
            model_id="qwen3-moe-tiny",
            tenant_id=None,
            family="qwen3_moe",
            base_model_id="qwen3-moe-tiny",
        )
        version = register_version(
            session,
            model,
            artifact_uri=path.as_uri(),
            sha256="0" * 64,
            config={"family": "qwen3_moe", "num_experts": 8},
        )
        session.add(
            Deployment(
                id="dep-bench-gw",
                tenant_id=tenant.id,
                name="bench",
                app_name="bench-s1",
                model="qwen3-moe-tiny",
                model_version_id=version.id,
                status="running",
                observed_generation=1,
                observed_version_id=version.id,
                autoscaling={},
                resources={},
            )
        )
    settings = Settings(home=tmp / "home", database_url=db_url)
    app = create_app(settings, db=db, limiter=MemoryLimiter())
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    body = {
        "model": "bench",
        "messages": [{"role": "user", "content": PROMPTS[0]}],
        "max_tokens": 1,
        "temperature": 0,
    }
    api: list[float] = []
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=tenant.headers) as client:
        for _ in range(5):
            client.post("/v1/chat/completions", json=body).raise_for_status()  # warm up
        for _ in range(n):
            start = time.perf_counter()
            client.post("/v1/chat/completions", json=body).raise_for_status()
            api.append(time.perf_counter() - start)
    tokenizer = app.state.gateway.tokenizers.get(version.id, str(path))[0]
    ids = tokenizer.apply_chat_template(body["messages"], add_generation_prompt=True)
    ids = list(ids["input_ids"] if hasattr(ids, "keys") else ids)

    async def direct() -> list[float]:
        out = []
        for i in range(n):
            payload = {
                "request_id": f"req-direct-{i}-{time.monotonic_ns()}",
                "tenant_id": tenant.id,
                "prompt_ids": ids,
                "max_tokens": 1,
                "sampling": {"temperature": 0.0},
                "stop": [],
            }
            start = time.perf_counter()
            async for _ in handle.generate.remote(payload):
                pass
            out.append(time.perf_counter() - start)
        return out

    handle_times = asyncio.run(direct())
    server.should_exit = True
    thread.join(timeout=10)
    return 1000 * statistics.median(api), 1000 * statistics.median(handle_times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--streams", default="1,8,32")
    parser.add_argument("--per-stream", type=int, default=2, help="requests per stream")
    parser.add_argument("--gateway-calls", type=int, default=40)
    args = parser.parse_args()
    streams = [int(s) for s in args.streams.split(",")]

    import ray
    from ray import serve
    from transformers import AutoTokenizer

    from moeplane.serving.app import build
    from moeplane.store.migrate import upgrade

    tmp = Path(tempfile.mkdtemp(prefix="moeplane-bench-serving-"))
    path = create_base_checkpoint("qwen3-moe-tiny", tmp / "ckpt", seed=0)
    tokenizer = AutoTokenizer.from_pretrained(path)
    db_url = f"sqlite:///{tmp / 'bench.db'}"
    upgrade(db_url)

    rows = [bench_generate(path, tokenizer, n, args.per_stream, args.max_tokens) for n in streams]
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        # one deployment at a time: each gets the whole machine, as (a) does
        for shards in (1, 2):
            name = f"bench-s{shards}"
            app = build(_spec(path, db_url, shards, name).to_args())
            handle = serve.run(app, name=name, route_prefix=None).options(stream=True)
            label = f"({'b' if shards == 1 else 'c'}) Serve, expert_shards={shards}"
            for n in streams:
                rows.append(
                    asyncio.run(
                        _serve_load(handle, tokenizer, n, args.per_stream, args.max_tokens, label)
                    )
                )
            if shards == 1:
                api_p50, handle_p50 = _gateway_latency(
                    tmp, db_url, handle, path, args.gateway_calls
                )
            serve.delete(name)
    finally:
        serve.shutdown()
        ray.shutdown()

    header = ["setup", "streams", "requests", "tok/s", "p50 ms", "p99 ms"]
    print(f"\nmax_tokens={args.max_tokens}, greedy, {args.per_stream} requests per stream")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        print(
            f"| {r['setup']} | {r['streams']} | {r['requests']} | {r['tok/s']:.0f} | "
            f"{r['p50 ms']:.0f} | {r['p99 ms']:.0f} |"
        )
    base = {r["streams"]: r["tok/s"] for r in rows if r["setup"].startswith("(a)")}
    for r in rows:
        if r["setup"].startswith("(b)"):
            ratio = r["tok/s"] / base[r["streams"]]
            print(f"(b)/(a) tokens/s at {r['streams']} streams: {ratio:.2f}x")
    print(
        f"\ngateway p50 {api_p50:.1f} ms vs direct handle {handle_p50:.1f} ms: "
        f"added {api_p50 - handle_p50:.1f} ms (target < 5 ms)"
    )


if __name__ == "__main__":
    main()
