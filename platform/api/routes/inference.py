"""OpenAI-compatible inference: ``POST /v1/chat/completions`` and ``POST /v1/completions``.

The accounting every metered call shares (deployment lookup, tpm reservation and settlement,
monthly budget, 503s, SSE) lives in `moeplane.api.metered`; this module shapes OpenAI's
completion objects and chunks around it. Prompts are tokenised in the API, so a tpm reservation
of prompt + max_tokens is exact and over-long prompts never reach a replica.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from moeplane.api.deps import TenantNow, TenantScope
from moeplane.api.metered import (
    collect,
    open_generation,
    reserve_prompt,
    stream_sse,
    usage_of,
)
from moeplane.api.schemas.inference import ChatCompletionRequest, CompletionRequest
from moeplane.store.ids import new_id

router = APIRouter(prefix="/v1", tags=["inference"])


def _payload(tenant: TenantScope, prompt_ids: list[int], body, max_tokens: int) -> dict[str, Any]:
    return {
        "request_id": new_id("req"),
        "tenant_id": tenant.id,
        "prompt_ids": prompt_ids,
        "max_tokens": max_tokens,
        "sampling": body.sampling(),
        "stop": body.stops(),
    }


def _finish(reason: str | None) -> str | None:
    return {"abort": "stop"}.get(reason, reason) if reason else None


@router.post("/chat/completions")
async def chat_completions(body: ChatCompletionRequest, request: Request, tenant: TenantNow):
    max_tokens = body.limit()
    messages = [{"role": m.role, "content": m.text()} for m in body.messages]
    target, prompt_ids, call = await reserve_prompt(
        request, tenant, body.model, lambda g, t: g.encode_chat(t, messages), max_tokens
    )
    payload = _payload(tenant, prompt_ids, body, max_tokens)
    first, chunks = await open_generation(request, target, payload, call)
    completion_id, created = "chatcmpl-" + payload["request_id"][4:], int(time.time())
    if body.stream:

        def frame(chunk, is_first, usage=False):
            base = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": target.model,
            }
            if usage:
                return base | {"choices": [], "usage": usage_of(chunk)}
            delta = {"role": "assistant", "content": chunk["text"]} if is_first else {}
            if not is_first and chunk["text"]:
                delta = {"content": chunk["text"]}
            choice = {"index": 0, "delta": delta, "finish_reason": _finish(chunk["finish_reason"])}
            return base | {"choices": [choice]}

        include = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(
            stream_sse(first, chunks, call, frame, include), media_type="text/event-stream"
        )
    text, last = await collect(first, chunks, call)
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": target.model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": _finish(last["finish_reason"]),
            }
        ],
        "usage": usage_of(last),
    }


@router.post("/completions")
async def completions(body: CompletionRequest, request: Request, tenant: TenantNow):
    prompt = body.text()
    target, prompt_ids, call = await reserve_prompt(
        request, tenant, body.model, lambda g, t: g.encode_text(t, prompt), body.max_tokens
    )
    payload = _payload(tenant, prompt_ids, body, body.max_tokens)
    first, chunks = await open_generation(request, target, payload, call)
    completion_id, created = "cmpl-" + payload["request_id"][4:], int(time.time())
    if body.stream:

        def frame(chunk, is_first, usage=False):
            base = {
                "id": completion_id,
                "object": "text_completion",
                "created": created,
                "model": target.model,
            }
            if usage:
                return base | {"choices": [], "usage": usage_of(chunk)}
            choice = {
                "index": 0,
                "text": chunk["text"],
                "logprobs": None,
                "finish_reason": _finish(chunk["finish_reason"]),
            }
            return base | {"choices": [choice]}

        include = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(
            stream_sse(first, chunks, call, frame, include), media_type="text/event-stream"
        )
    text, last = await collect(first, chunks, call)
    return {
        "id": completion_id,
        "object": "text_completion",
        "created": created,
        "model": target.model,
        "choices": [
            {
                "index": 0,
                "text": text,
                "logprobs": None,
                "finish_reason": _finish(last["finish_reason"]),
            }
        ],
        "usage": usage_of(last),
    }
