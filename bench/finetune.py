"""Training throughput of the platform's Ray Train path against a plain torch loop.

Same model (qwen3-moe-tiny, moeplane experts kernels), same data, batch size, optimizer and
steps, measured in one run. Tokens/s counts assistant (trained) tokens per second of the training
loop itself, so start-up (Ray workers, model load) is excluded from both; it is reported apart.

    python bench/finetune.py [--steps 24] [--method lora|full]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

# bench/ must not be on sys.path: bench/kernels.py would shadow the `kernels` package that
# transformers imports. The repository root goes there instead.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import torch

from moeplane.jobs.finetune import (
    TrainingSpec,
    run_training,
    support_chat_dataset,
    write_jsonl,
)
from moeplane.jobs.finetune.data import collate, epoch_batches, load_examples
from moeplane.jobs.finetune.train import _build_model
from moeplane.modeling import create_base_checkpoint


def plain_loop(spec: TrainingSpec, steps: int) -> tuple[float, float]:
    """(tokens/s after the first step, start-up seconds) of a single-process torch loop."""
    from transformers import AutoTokenizer

    start = time.perf_counter()
    torch.manual_seed(spec.seed)
    torch.set_num_threads(max(1, round(spec.cpus_per_worker)))  # as a Ray Train worker sets
    tokenizer = AutoTokenizer.from_pretrained(spec.base_model_path, local_files_only=True)
    examples = load_examples(spec.training_file, tokenizer, spec.max_seq_len)
    model, _ = _build_model(spec)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=spec.learning_rate, weight_decay=0.0)
    batches = epoch_batches(
        len(examples), spec.batch_size, epoch=0, seed=spec.seed, rank=0, world=1
    )
    startup = time.perf_counter() - start
    tokens, t0 = 0, None
    for step in range(steps):
        ids = batches[step % len(batches)]
        loss = model(**collate([examples[i] for i in ids], tokenizer.pad_token_id)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step == 0:
            t0 = time.perf_counter()  # like the Ray path's window, after the first step
        else:
            tokens += sum(examples[i].trained_tokens for i in ids)
    return tokens / (time.perf_counter() - t0), startup


class _Sink:
    """Stands in for the job reporter: receives every step's metrics (in the worker)."""

    def __init__(self) -> None:
        self.received: list[dict] = []

    def __call__(self, metrics: dict) -> None:
        self.received.append(metrics)


def ray_path(spec: TrainingSpec) -> tuple[float, float]:
    start = time.perf_counter()
    result = run_training(spec, on_metrics=_Sink())
    total = time.perf_counter() - start
    first, last = result.metrics_history[0], result.metrics_history[-1]
    # steady state, like the plain loop: from the end of the first step to the end of the last
    rate = (last["trained_tokens"] - first["trained_tokens"]) / (
        last["elapsed_s"] - first["elapsed_s"]
    )
    return rate, total - last["elapsed_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--method", default="lora", choices=["lora", "full"])
    parser.add_argument("--log-every", type=int, default=1, help="report metrics every N steps")
    parser.add_argument(
        "--cpus", type=float, default=1.0, help="CPUs of the training worker (= torch threads)"
    )
    args = parser.parse_args()
    import ray

    root = Path(tempfile.mkdtemp(prefix="moeplane-bench-ft-"))
    base = create_base_checkpoint("qwen3-moe-tiny", root / "base", tokenizer_cache_dir=root / "t")
    rows = support_chat_dataset(4 * args.steps, seed=0)
    data = write_jsonl(rows, root / "train.jsonl")
    spec = TrainingSpec(
        job_id="bench",
        base_model_path=str(base),
        training_file=str(data),
        output_dir=str(root / "out"),
        checkpoint_dir=str(root / "ckpt"),
        method=args.method,
        batch_size=4,
        n_epochs=1,
        num_workers=1,
        cpus_per_worker=args.cpus,
        checkpoint_every_steps=10_000,
        log_every_steps=args.log_every,
    )
    plain_rate, plain_startup = plain_loop(spec, args.steps)
    # Ray starts workers at nice 15; on 2 cores its own daemons then take the training's CPU.
    # moeplane starts its local Ray the same way (see moeplane.runtime).
    os.environ.setdefault("RAY_worker_niceness", "0")
    ray.init(
        address="local",
        num_cpus=max(2, math.ceil(args.cpus)),
        include_dashboard=False,
        log_to_driver=False,
    )
    ray_rate, ray_startup = ray_path(spec)
    ray.shutdown()
    # the plain loop again, best of both: a shared machine's load drifts during a run
    plain_rate = max(plain_rate, plain_loop(spec, args.steps)[0])
    print(
        f"qwen3-moe-tiny, {args.method}, batch 4, {args.steps} steps, 1 worker, "
        f"{args.cpus:g} CPUs / torch threads {torch.get_num_threads()}"
    )
    print(f"{'path':<22} {'tokens/s':>10} {'start-up s':>11}")
    print(f"{'plain torch loop':<22} {plain_rate:>10.1f} {plain_startup:>11.1f}")
    print(f"{'Ray Train (moeplane)':<22} {ray_rate:>10.1f} {ray_startup:>11.1f}")
    print(f"overhead after start-up: {100 * (plain_rate / ray_rate - 1):+.1f}%")


if __name__ == "__main__":
    main()
