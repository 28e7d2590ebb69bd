"""Run one fine-tune on Ray Train and hand back a merged Hugging Face checkpoint.

``run_training`` is called by the job's Ray driver. Fault tolerance comes from Ray Train:
``FailureConfig(max_failures)`` restarts a worker group that lost a worker from the latest
checkpoint, and a driver that is itself restarted with the same ``job_id`` and
``checkpoint_dir`` finds the run's checkpoint snapshot in storage and resumes from it too.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from moeplane.jobs.finetune.spec import TrainingResult, TrainingSpec
from moeplane.jobs.finetune.train import (
    FINAL_DIR,
    HISTORY_FILE,
    METRICS_SINK,
    train_loop_per_worker,
)

__all__ = ["run_training"]

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "vocab.json",
    "merges.txt",
    "generation_config.json",
)

MetricsSink = Callable[[dict[str, Any]], None]


def _callback(on_metrics: MetricsSink | None):
    """A Ray Train callback (it runs in the train controller, so it must pickle) that passes
    rank 0's checkpoint reports, with the persisted checkpoint's path, to ``on_metrics``.

    ``on_metrics`` is called from two processes: here for checkpoint steps, and by rank 0
    itself for the steps between (so it must pickle and be safe to call from any process).
    """
    from ray.train import UserCallback

    class ForwardMetrics(UserCallback):
        def after_report(self, run_context, metrics, checkpoint):
            if on_metrics is None or not metrics:
                return
            report = dict(metrics[0])
            if checkpoint is not None:
                report["checkpoint_uri"] = checkpoint.path
            on_metrics(report)

    return ForwardMetrics()


def run_training(spec: TrainingSpec, *, on_metrics: MetricsSink | None = None) -> TrainingResult:
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=spec.to_dict() | {METRICS_SINK: on_metrics},
        scaling_config=ScalingConfig(
            num_workers=spec.num_workers,
            use_gpu=spec.use_gpu,
            resources_per_worker={"CPU": spec.cpus_per_worker}
            | ({"GPU": 1} if spec.use_gpu else {}),
        ),
        run_config=RunConfig(
            name=spec.job_id,
            storage_path=spec.checkpoint_dir,
            failure_config=FailureConfig(max_failures=spec.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            callbacks=[_callback(on_metrics)],
            worker_runtime_env={"env_vars": {"TOKENIZERS_PARALLELISM": "false"}},
        ),
    )
    result = trainer.fit()
    if result.error is not None:
        raise result.error
    return _finish(spec, result)


def _finish(spec: TrainingSpec, result: Any) -> TrainingResult:
    output = Path(spec.output_dir)
    if output.exists():
        shutil.rmtree(output)
    with result.checkpoint.as_directory() as directory:
        shutil.copytree(Path(directory) / FINAL_DIR, output)
        history = json.loads((Path(directory) / HISTORY_FILE).read_text())
    base = Path(spec.base_model_path)
    for name in TOKENIZER_FILES:
        if (base / name).exists() and not (output / name).exists():
            shutil.copy2(base / name, output / name)
    metrics = result.metrics or {}
    losses = [h["train_loss"] for h in history if "train_loss" in h]
    return TrainingResult(
        output_dir=str(output),
        final_step=int(metrics.get("step", 0)),
        total_steps=int(metrics.get("total_steps", 0)),
        trained_tokens=int(metrics.get("trained_tokens", 0)),
        first_loss=losses[0] if losses else None,
        last_loss=losses[-1] if losses else None,
        metrics_history=history,
        checkpoint_path=result.checkpoint.path,
        resumed_from_step=int(metrics.get("resumed_from_step", 0)),
    )
