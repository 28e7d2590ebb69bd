"""The per-worker training loop that Ray Train runs on every data-parallel worker.

LoRA (peft; on attention projections and, for MoE models, on the experts' fused
``gate_up_proj``/``down_proj`` tensors via ``target_parameters``) or full fine-tuning; loss only
on assistant tokens; AdamW with linear warm-up and decay. Checkpoints hold the trainable weights,
optimizer, scheduler and step, so a restarted worker group continues from the same step. The
last checkpoint also holds the merged Hugging Face model (``final/``): merged, because serving and
expert sharding then load one plain checkpoint, with no adapter plumbing on the hot path.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from moeplane.jobs.finetune.data import collate, epoch_batches, load_examples
from moeplane.jobs.finetune.spec import EXPERT_PARAMETERS, TrainingSpec

__all__ = ["train_loop_per_worker"]

STATE_FILE = "train_state.pt"
FINAL_DIR = "final"
HISTORY_FILE = "history.json"
METRICS_SINK = "_metrics_sink"  # train_loop_config key of the picklable on_metrics callable


def _build_model(spec: TrainingSpec):
    from moeplane.modeling import load_model, read_config

    family = read_config(spec.base_model_path).model_type
    implementation = None
    if family == "qwen3_moe":
        import moeplane.kernels  # noqa: F401  (registers the "moeplane" experts implementation)

        implementation = "moeplane"
    model = load_model(spec.base_model_path, experts_implementation=implementation)
    model.train()
    if spec.method == "full":
        return model, family
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=spec.lora_r,
        lora_alpha=spec.lora_alpha,
        lora_dropout=spec.lora_dropout,
        target_modules=list(spec.lora_target_modules),
        target_parameters=(
            list(EXPERT_PARAMETERS) if family == "qwen3_moe" and spec.lora_target_experts else None
        ),
    )
    return get_peft_model(model, config), family


def _schedule(total_steps: int, warmup_fraction: float):
    warmup = max(1, int(total_steps * warmup_fraction))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.1, 1.0 - (step - warmup) / max(1, total_steps - warmup))

    return factor


def _trainable_state(model) -> dict[str, torch.Tensor]:
    named = dict(model.named_parameters())
    return {k: v.detach().clone() for k, v in named.items() if v.requires_grad}


def _save(model, optimizer, scheduler, run: _Run, *, final: bool, out: Path) -> None:
    state = {
        "model": _trainable_state(model),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "step": run.step,
        "tokens": run.tokens,
        "history": run.history,
    }
    torch.save(state, out / STATE_FILE)
    if final:
        merged = model.merge_and_unload() if hasattr(model, "merge_and_unload") else model
        merged.save_pretrained(out / FINAL_DIR, safe_serialization=True)
        (out / HISTORY_FILE).write_text(json.dumps(run.history))


@dataclass
class _Run:
    """Progress that survives a restart (it travels in every checkpoint)."""

    step: int = 0
    tokens: int = 0
    resumed_from: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)


def _restore(model, optimizer, scheduler) -> _Run:
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return _Run()
    with checkpoint.as_directory() as directory:
        state = torch.load(Path(directory) / STATE_FILE, weights_only=False)
    model.load_state_dict(state["model"], strict=False)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    return _Run(
        step=state["step"],
        tokens=state["tokens"],
        resumed_from=state["step"],
        history=state["history"],
    )


def train_loop_per_worker(config: dict[str, Any]) -> None:
    import ray.train
    import ray.train.torch
    from transformers import AutoTokenizer

    spec = TrainingSpec.from_dict(config)
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    torch.manual_seed(spec.seed)
    # as many intra-op threads as CPUs reserved for this worker (Ray's default may be fewer)
    torch.set_num_threads(max(1, round(spec.cpus_per_worker)))
    tokenizer = AutoTokenizer.from_pretrained(spec.base_model_path, local_files_only=True)
    examples = load_examples(spec.training_file, tokenizer, spec.max_seq_len)
    model, _ = _build_model(spec)
    wrapped = ray.train.torch.prepare_model(model)  # DDP over gloo (CPU) or NCCL (GPU)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=spec.learning_rate, weight_decay=0.0)
    steps_per_epoch = len(
        epoch_batches(
            len(examples), spec.batch_size, epoch=0, seed=spec.seed, rank=rank, world=world
        )
    )
    total_steps = steps_per_epoch * spec.n_epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _schedule(total_steps, spec.warmup_fraction)
    )
    run = _restore(model, optimizer, scheduler)
    device = ray.train.torch.get_device()
    started, window_tokens = time.perf_counter(), 0
    while run.step < total_steps:
        epoch, index = divmod(run.step, steps_per_epoch)
        ids = epoch_batches(
            len(examples), spec.batch_size, epoch=epoch, seed=spec.seed, rank=rank, world=world
        )[index]
        batch = {
            k: v.to(device)
            for k, v in collate([examples[i] for i in ids], tokenizer.pad_token_id).items()
        }
        loss = wrapped(**batch).loss  # mean over assistant tokens of this batch
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        run.step += 1
        batch_tokens = sum(examples[i].trained_tokens for i in ids) * world
        run.tokens += batch_tokens
        window_tokens += batch_tokens
        metrics = {
            "step": run.step,
            "total_steps": total_steps,
            "epoch": epoch + 1,
            "train_loss": float(loss.item()),
            "lr": float(scheduler.get_last_lr()[0]),
            "trained_tokens": run.tokens,
            "resumed_from_step": run.resumed_from,
            "tokens_per_s": round(window_tokens / max(1e-9, time.perf_counter() - started), 2),
            "elapsed_s": round(time.perf_counter() - started, 3),  # since this worker's loop began
        }
        run.history.append(metrics)
        _report(spec, rank, run, metrics, model, optimizer, scheduler, config.get(METRICS_SINK))


def _report(spec, rank, run: _Run, metrics, model, optimizer, scheduler, sink) -> None:
    """Checkpoint steps go through ``ray.train.report`` (a cross-rank barrier and a round trip
    to the controller, ~1 s on a busy 2-core machine); the steps between only go to the
    platform's sink, straight from rank 0, so live metrics cost no synchronisation."""
    import ray.train

    if math.isnan(metrics["train_loss"]):
        raise FloatingPointError(f"the loss became NaN at step {run.step}")
    last = run.step == metrics["total_steps"]
    if not (last or run.step % spec.checkpoint_every_steps == 0):
        if rank == 0 and sink is not None and run.step % spec.log_every_steps == 0:
            sink(metrics)
        return
    with tempfile.TemporaryDirectory() as directory:
        checkpoint = None
        if rank == 0:
            _save(model, optimizer, scheduler, run, final=last, out=Path(directory))
            checkpoint = ray.train.Checkpoint.from_directory(directory)
        ray.train.report(metrics, checkpoint=checkpoint)
