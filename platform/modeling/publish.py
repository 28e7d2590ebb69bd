"""Put models into the registry: the base catalog (generated checkpoints) and user-supplied
Hugging Face checkpoints (``moeplane models import``). Both end as immutable versions whose
artifacts live in storage."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from moeplane.errors import InvalidRequest
from moeplane.modeling.catalog import BASE_MODELS, create_base_checkpoint
from moeplane.modeling.checkpoint import (
    read_config,
    sha256_dir,
    summarize_config,
    validate_checkpoint_dir,
)
from moeplane.modeling.embeddings import (
    EMBEDDING_MODEL_ID,
    default_model_path,
    embedding_summary,
)
from moeplane.storage import Storage
from moeplane.store.models import ModelVersion
from moeplane.store.registry import ensure_model, register_version, summary_dict

__all__ = ["import_checkpoint", "register_embedding_model", "seed_base_models"]

CATALOG_SEED = 0  # base weights are random but fixed, so every install has the same models


def _publish(
    db: Session, storage: Storage, local_dir: Path, *, model_id: str, description: str
) -> ModelVersion:
    summary = summarize_config(read_config(local_dir))
    sha = sha256_dir(local_dir)
    key = f"models/{model_id}/{sha[:16]}"
    storage.put_dir(local_dir, key)
    model = ensure_model(
        db,
        model_id=model_id,
        tenant_id=None,
        family=summary.family,
        base_model_id=model_id,
        description=description,
    )
    return register_version(
        db,
        model,
        artifact_uri=storage.uri(key),
        sha256=sha,
        config=summary_dict(summary),
        seed=CATALOG_SEED,
    )


def seed_base_models(
    db: Session,
    storage: Storage,
    *,
    tokenizer_cache: Path | None = None,
    progress: Callable[[str], object] = lambda _: None,
) -> list[str]:
    """Register every catalog model that has no version yet; return the ids it added."""
    added = []
    for name, spec in BASE_MODELS.items():
        if db.scalar(select(ModelVersion.id).where(ModelVersion.model_id == name).limit(1)):
            continue
        progress(f"creating base model {name} ...")
        with tempfile.TemporaryDirectory(prefix="moeplane-seed-") as tmp:
            path = create_base_checkpoint(
                name, Path(tmp) / name, seed=CATALOG_SEED, tokenizer_cache_dir=tokenizer_cache
            )
            _publish(db, storage, path, model_id=name, description=spec.description)
        added.append(name)
    if register_embedding_model(db) is not None:
        added.append(EMBEDDING_MODEL_ID)
    return added


def register_embedding_model(db: Session) -> ModelVersion | None:
    """Register the packaged all-MiniLM-L6-v2 (family ``sentence_embedding``, served as an
    ``embeddings`` deployment) if it has no version yet. Its artifact is the installed package's
    directory, which every Ray node has because the platform's image installs the package."""
    if db.scalar(select(ModelVersion.id).where(ModelVersion.model_id == EMBEDDING_MODEL_ID)):
        return None
    path = default_model_path()
    model = ensure_model(
        db,
        model_id=EMBEDDING_MODEL_ID,
        tenant_id=None,
        family="sentence_embedding",
        base_model_id=EMBEDDING_MODEL_ID,
        description="all-MiniLM-L6-v2 sentence embeddings (384 dimensions, English)",
    )
    return register_version(
        db,
        model,
        artifact_uri=path.as_uri(),
        sha256=sha256_dir(path),
        config=summary_dict(embedding_summary(path)),
    )


def import_checkpoint(db: Session, storage: Storage, path: Path, *, name: str) -> ModelVersion:
    """Register a local Hugging Face checkpoint (validated first) as a new base model version."""
    if not name or len(name) > 100 or name.startswith("ft:") or "/" in name:
        raise InvalidRequest(
            "name must be 1-100 characters, no '/', not starting with 'ft:'", param="name"
        )
    validate_checkpoint_dir(path)
    with tempfile.TemporaryDirectory(prefix="moeplane-import-") as tmp:
        # copy only the artifact files (what sha256_dir hashes), not caches or .git
        local = Path(tmp) / "ckpt"
        shutil.copytree(path, local, ignore=shutil.ignore_patterns(".*"))
        return _publish(db, storage, local, model_id=name, description=f"imported from {path}")
