"""What one fine-tuning run is: a JSON-serialisable spec, validated loudly."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

__all__ = ["TrainingResult", "TrainingSpec"]

ATTENTION_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")
EXPERT_PARAMETERS = ("mlp.experts.gate_up_proj", "mlp.experts.down_proj")


@dataclass
class TrainingSpec:
    job_id: str
    base_model_path: str  # a local Hugging Face checkpoint directory
    training_file: str  # local chat JSONL
    output_dir: str  # where the merged checkpoint is written (on the driver's machine)
    checkpoint_dir: str  # Ray Train storage_path: a run with the same job_id resumes from here
    validation_file: str | None = None
    method: str = "lora"  # lora | full
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    lora_target_modules: tuple[str, ...] = ATTENTION_MODULES
    lora_target_experts: bool = True
    n_epochs: int = 1
    batch_size: int = 4
    learning_rate: float = 2e-3
    warmup_fraction: float = 0.1
    max_seq_len: int = 512
    seed: int = 0
    num_workers: int = 1
    cpus_per_worker: float = 0.5
    use_gpu: bool = False
    checkpoint_every_steps: int = 10
    log_every_steps: int = 1
    max_failures: int = 2
    tokenizer_dir: str | None = None

    def __post_init__(self) -> None:
        checks = [
            ("method", self.method in ("lora", "full"), "must be 'lora' or 'full'"),
            ("lora_r", self.lora_r >= 1, "must be >= 1"),
            ("lora_alpha", self.lora_alpha >= 1, "must be >= 1"),
            ("lora_dropout", 0 <= self.lora_dropout < 1, "must be in [0, 1)"),
            ("n_epochs", self.n_epochs >= 1, "must be >= 1"),
            ("batch_size", self.batch_size >= 1, "must be >= 1"),
            ("learning_rate", self.learning_rate > 0, "must be > 0"),
            ("warmup_fraction", 0 <= self.warmup_fraction < 1, "must be in [0, 1)"),
            ("max_seq_len", self.max_seq_len >= 8, "must be >= 8"),
            ("num_workers", self.num_workers >= 1, "must be >= 1"),
            ("cpus_per_worker", self.cpus_per_worker > 0, "must be > 0"),
            ("checkpoint_every_steps", self.checkpoint_every_steps >= 1, "must be >= 1"),
            ("log_every_steps", self.log_every_steps >= 1, "must be >= 1"),
            ("max_failures", self.max_failures >= -1, "must be >= -1"),
        ]
        for name, ok, rule in checks:
            if not ok:
                raise ValueError(f"TrainingSpec.{name} {rule} (got {getattr(self, name)!r})")
        self.lora_target_modules = tuple(self.lora_target_modules)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["lora_target_modules"] = list(self.lora_target_modules)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainingSpec:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class TrainingResult:
    output_dir: str
    final_step: int
    total_steps: int
    trained_tokens: int
    first_loss: float | None
    last_loss: float | None
    metrics_history: list[dict[str, Any]]
    checkpoint_path: str | None
    resumed_from_step: int
