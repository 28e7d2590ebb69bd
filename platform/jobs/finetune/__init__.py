"""Fine-tuning on Ray Train: the run spec, the per-worker loop, the runner, sample data."""

from moeplane.jobs.finetune.runner import run_training
from moeplane.jobs.finetune.sample_data import support_chat_dataset, write_jsonl
from moeplane.jobs.finetune.spec import TrainingResult, TrainingSpec

__all__ = ["TrainingResult", "TrainingSpec", "run_training", "support_chat_dataset", "write_jsonl"]
