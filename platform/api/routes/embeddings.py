"""``POST /v1/embeddings``: OpenAI's embeddings API over the tenant's ``embeddings`` deployment.

Texts are counted with the model's own tokenizer in the API, so the tpm reservation and the
monthly budget check are exact before anything reaches a replica; the replica batches
concurrent requests (``@serve.batch``) and bills the tokens it embedded
(`moeplane.serving.embeddings`).
"""

from __future__ import annotations

import base64

import numpy as np
from fastapi import APIRouter, Request

from moeplane.api.deps import TenantNow
from moeplane.api.metered import replica_failed, reserve, serve_handle
from moeplane.api.schemas.embeddings import (
    EmbeddingItem,
    EmbeddingList,
    EmbeddingRequest,
    EmbeddingUsage,
)
from moeplane.errors import InvalidRequest, ServiceUnavailable
from moeplane.modeling.embeddings import token_counter
from moeplane.serving.gateway import Gateway, Target
from moeplane.store.ids import new_id

router = APIRouter(prefix="/v1", tags=["embeddings"])


def _encode(vector: np.ndarray, encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":
        return base64.b64encode(vector.astype("<f4").tobytes()).decode()
    return vector.tolist()


@router.post("/embeddings", response_model=EmbeddingList)
async def create_embeddings(body: EmbeddingRequest, request: Request, tenant: TenantNow):
    texts = body.texts()

    def measure(gateway: Gateway, target: Target) -> tuple[int, int]:
        counter = token_counter(target.artifact_path)
        if body.dimensions is not None and body.dimensions != counter.dim:
            raise InvalidRequest(
                f"this model's embeddings have {counter.dim} dimensions", param="dimensions"
            )
        tokens = sum(counter(texts))
        return tokens, tokens

    target, _, call = await reserve(request, tenant, body.model, measure, kind="embeddings")
    payload = {"request_id": new_id("req"), "tenant_id": tenant.id, "input": texts}
    try:
        handle = await serve_handle(request, target)
        result = await handle.options(stream=False).embed.remote(payload)
    except ServiceUnavailable:
        call.settle(0)
        raise
    except Exception as exc:  # the replica died or refused: clear 503, nothing billed
        call.settle(0)
        raise replica_failed(exc) from exc
    call.settle(int(result["prompt_tokens"]))
    vectors = np.asarray(result["embeddings"], dtype=np.float32)  # (n, dim)
    data = [
        EmbeddingItem(index=i, embedding=_encode(v, body.encoding_format))
        for i, v in enumerate(vectors)
    ]
    usage = EmbeddingUsage(
        prompt_tokens=result["prompt_tokens"], total_tokens=result["prompt_tokens"]
    )
    return EmbeddingList(data=data, model=target.model, usage=usage)
