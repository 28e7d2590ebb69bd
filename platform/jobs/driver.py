"""The Ray job entrypoint of a fine-tune: ``python -m moeplane.jobs.driver JOB_ID``.

Runs on the Ray cluster (submitted by the ``submit_training`` task with submission id = job id).
It reads the job, fetches the base checkpoint and dataset, runs the Ray Train fine-tune (which
resumes from the last checkpoint if this driver is a retry), uploads the merged checkpoint and
registers the model version. Exit status 0 = succeeded or no longer wanted; 1 = failed.
"""

from __future__ import annotations

import logging
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlparse

import fsspec

from moeplane.config import get_settings
from moeplane.jobs.publishing import JobReporter, TrainingOutcome, fail_job, publish_result
from moeplane.storage import Storage
from moeplane.store.db import Database
from moeplane.store.jobs import add_event
from moeplane.store.models import File, FineTuneJob, ModelVersion

log = logging.getLogger("moeplane.driver")


def localize(uri: str, cache: Path) -> Path:
    """A local directory or file for ``uri``: itself for file://, else a cached download."""
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        return Path(parsed.path)
    target = cache / parsed.netloc / parsed.path.lstrip("/")
    if not target.exists():
        fs, path = fsspec.core.url_to_fs(uri)
        partial = target.with_name(target.name + ".partial")
        fs.get(path, str(partial), recursive=fs.isdir(path))
        partial.rename(target)
    return target


def _spec(job: FineTuneJob, base_dir: Path, train: Path, valid: Path | None, work: Path, settings):
    from moeplane.jobs.finetune import TrainingSpec

    lora = job.lora or {}
    return TrainingSpec(
        job_id=job.id,
        base_model_path=str(base_dir),
        training_file=str(train),
        validation_file=str(valid) if valid else None,
        output_dir=str(work / "output"),
        checkpoint_dir=str(settings.home / "train-checkpoints"),
        method=job.method,
        lora_r=lora.get("r", 8),
        lora_alpha=lora.get("alpha", 16),
        lora_dropout=lora.get("dropout", 0.0),
        lora_target_experts=lora.get("target_experts", True),
        n_epochs=job.hyperparameters["n_epochs"],
        batch_size=job.hyperparameters["batch_size"],
        learning_rate=job.hyperparameters["learning_rate"],
        seed=job.seed,
        num_workers=job.num_workers,
        cpus_per_worker=job.cpus_per_worker,
        use_gpu=job.gpus_per_worker > 0,
        tokenizer_dir=str(settings.home / "cache" / "tokenizer"),
    )


def run(job_id: str) -> int:
    from moeplane.jobs.finetune import run_training
    from moeplane.modeling import read_config, sha256_dir, summarize_config
    from moeplane.store.registry import summary_dict

    settings = get_settings()
    db = Database(settings.database_url)
    storage = Storage(settings.storage_uri)
    with db.session() as session:
        job = session.get(FineTuneJob, job_id)
        if job is None or job.status != "running":
            log.info("job %s is not running (%s); nothing to do", job_id, job and job.status)
            return 0
        base = session.get(ModelVersion, job.base_version_id)
        train = session.get(File, job.training_file)
        valid = session.get(File, job.validation_file) if job.validation_file else None
        add_event(
            session, job, f"Training driver started ({job.num_workers} worker(s), {job.method})"
        )
    cache = settings.home / "cache" / "artifacts"
    try:
        base_dir = localize(base.artifact_uri, cache)
        train_path = localize(storage.uri(train.storage_key), cache)
        valid_path = localize(storage.uri(valid.storage_key), cache) if valid else None
        with tempfile.TemporaryDirectory(prefix=f"{job_id}-") as tmp:
            spec = _spec(job, base_dir, train_path, valid_path, Path(tmp), settings)
            result = run_training(spec, on_metrics=JobReporter(settings.database_url, job_id))
            output = Path(result.output_dir)
            sha = sha256_dir(output)
            key = f"tenants/{job.tenant_id}/models/{job_id}"
            storage.put_dir(output, key)
            outcome = TrainingOutcome(
                artifact_uri=storage.uri(key),
                sha256=sha,
                config=summary_dict(summarize_config(read_config(output))),
                trained_tokens=result.trained_tokens,
                final_step=result.final_step,
            )
        with db.session() as session:
            publish_result(session, job_id, outcome)
        return 0
    except Exception as exc:  # the driver's last word: any failure becomes the job's error
        log.exception("fine-tune %s failed", job_id)
        with db.session() as session:
            fail_job(session, job_id, f"{type(exc).__name__}: {exc}")
        return 1
    finally:
        db.dispose()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    sys.exit(run(sys.argv[1]))
