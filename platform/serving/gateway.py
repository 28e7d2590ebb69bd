"""The API side of inference: model name -> deployment -> Serve handle, and token accounting.

`resolve_target` (pure database work) finds the tenant's deployment a request names;
`Gateway` holds what an API process keeps between requests: its Ray connection, Serve handles
and tokenizers (one per model version, loaded from the version's checkpoint). Tokenising here
lets the API reserve exact prompt tokens against the tenant's tpm and reject over-long
prompts before anything reaches a replica.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, NoReturn
from urllib.parse import unquote, urlparse

from sqlalchemy.orm import Session

from moeplane.config import Settings
from moeplane.errors import InvalidRequest, NotFound, ServiceUnavailable
from moeplane.store.models import Deployment, ModelVersion
from moeplane.store.scoping import scoped

__all__ = ["Gateway", "Target", "raise_not_serving", "resolve_target", "serves"]

log = logging.getLogger(__name__)

_SERVING = ("running", "deploying")  # deploying: an older generation may still serve


@dataclass(frozen=True)
class Target:
    deployment_id: str
    app_name: str
    model: str  # what the response reports: the name the client used
    version_id: str  # the version whose tokenizer encodes the prompt
    artifact_path: str


def serves(deployment: Deployment) -> bool:
    """Whether Serve runs a generation of it (while deploying, an older one may still serve)."""
    return deployment.status in _SERVING and deployment.observed_generation > 0


def raise_not_serving(d: Deployment) -> NoReturn:
    raise ServiceUnavailable(
        f"The deployment '{d.name}' is {d.status}"
        + (f": {d.status_reason}" if d.status_reason else "")
        + "; retry when it is running",
        code="deployment_not_ready",
    )


def resolve_target(db: Session, tenant_id: str, model: str, kind: str = "llm") -> Target:
    """The tenant's deployment of ``kind`` for ``model``: a deployment name or id, or a model
    id that one of its deployments serves (the most recent one that is up). Another tenant's
    is a 404."""
    stmt = scoped(Deployment, tenant_id).where(Deployment.kind == kind)
    rows = list(db.scalars(stmt.order_by(Deployment.id.desc())))
    named = [d for d in rows if model in (d.name, d.id)]
    candidates = named or [d for d in rows if d.model == model]
    if not candidates:
        raise NotFound(
            f"No deployment serves '{model}': create one with POST /v1/deployments",
            param="model",
            code="model_not_deployed",
        )
    live = [d for d in candidates if serves(d)]
    if not live:
        raise_not_serving(candidates[0])
    d = live[0]
    version_id = d.observed_version_id or d.model_version_id
    if version_id is None:  # serves no model version (a recommender)
        return Target(d.id, d.app_name, model, "", "")
    version = db.get(ModelVersion, version_id)
    if version is None:
        raise ServiceUnavailable(f"model version {version_id} is gone", code="version_missing")
    return Target(
        deployment_id=d.id,
        app_name=d.app_name,
        model=model,
        version_id=version.id,
        artifact_path=unquote(urlparse(version.artifact_uri).path),
    )


class _Tokenizers:
    """A small LRU of (tokenizer, context length) per model version."""

    def __init__(self, size: int = 16):
        self.size = size
        self._items: OrderedDict[str, tuple[Any, int]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, version_id: str, path: str) -> tuple[Any, int]:
        with self._lock:
            if version_id in self._items:
                self._items.move_to_end(version_id)
                return self._items[version_id]
        from transformers import AutoTokenizer

        from moeplane.modeling.checkpoint import read_config

        tokenizer = AutoTokenizer.from_pretrained(path)
        context = int(getattr(read_config(path), "max_position_embeddings", 0) or 32768)
        with self._lock:
            self._items[version_id] = (tokenizer, context)
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return tokenizer, context


class Gateway:
    """Per API process: a Ray driver connection (made on first use) and Serve handles."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.tokenizers = _Tokenizers()
        self._handles: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._connected = False

    def _connect(self) -> None:
        # Ray reads its auth mode when first imported: set it before (see create_app too)
        os.environ.update(self.settings.ray_driver_env())
        import ray

        if self._connected or ray.is_initialized():
            self._connected = True
            return
        try:
            ray.init(
                address=self.settings.ray_gcs_address,
                namespace="moeplane",
                log_to_driver=False,
                logging_level=logging.WARNING,
                configure_logging=False,
            )
        except ConnectionError as exc:
            raise ServiceUnavailable(f"Ray is unreachable: {exc}", code="ray_unavailable") from exc
        self._connected = True

    def cached_handle(self, app_name: str) -> Any | None:
        """The handle if this process has one already (no blocking: callable on the loop)."""
        return self._handles.get(app_name)

    def handle(self, app_name: str) -> Any:
        """A streaming handle to the app's ModelServer (blocking on first use: call in a thread)."""
        with self._lock:
            if app_name in self._handles:
                return self._handles[app_name]
            self._connect()
            from ray import serve

            try:
                handle = serve.get_app_handle(app_name)
            except Exception as exc:  # Serve raises RayServeException / ValueError variants
                raise ServiceUnavailable(
                    f"Serve application {app_name} is not available: {exc}",
                    code="deployment_not_ready",
                ) from exc
            self._handles[app_name] = handle.options(stream=True)
            return self._handles[app_name]

    def encode_chat(self, target: Target, messages: list[dict[str, str]]) -> tuple[list[int], int]:
        tokenizer, context = self.tokenizers.get(target.version_id, target.artifact_path)
        ids = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        return list(ids), context

    def encode_text(self, target: Target, text: str) -> tuple[list[int], int]:
        tokenizer, context = self.tokenizers.get(target.version_id, target.artifact_path)
        return list(tokenizer.encode(text, add_special_tokens=False)), context

    async def stream(self, handle: Any, payload: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        response = handle.generate.remote(payload)
        finished = False
        try:
            async for chunk in response:
                yield chunk
            finished = True
        finally:
            if not finished:
                response.cancel()  # a client that went away stops the generation (it is billed)


def check_context(prompt_tokens: int, max_tokens: int, context: int) -> None:
    if prompt_tokens + max_tokens > context:
        raise InvalidRequest(
            f"This model's context is {context} tokens; the prompt has {prompt_tokens} and "
            f"max_tokens asks for {max_tokens} more",
            param="max_tokens",
            code="context_length_exceeded",
        )
