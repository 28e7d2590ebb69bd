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


async def _respond(
    body, first, chunks, call, *, head: dict[str, Any], stream_object: str, choice, final_choice
):
    """One OpenAI response, streamed (SSE chunks of ``stream_object``) or whole.

    ``choice(chunk, is_first)`` shapes one streamed choice; ``final_choice(text, reason)`` the
    non-streamed one. Chat and completions differ only in these.
    """
    if body.stream:
        base = head | {"object": stream_object}

        def frame(chunk, is_first, usage=False):
            if usage:
                return base | {"choices": [], "usage": usage_of(chunk)}
            return base | {"choices": [choice(chunk, is_first)]}

        include = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(
            stream_sse(first, chunks, call, frame, include), media_type="text/event-stream"
        )
    text, last = await collect(first, chunks, call)
    reason = _finish(last["finish_reason"])
    return head | {"choices": [final_choice(text, reason)], "usage": usage_of(last)}


def _head(prefix: str, payload: dict[str, Any], target, object_: str) -> dict[str, Any]:
    return {
        "id": prefix + payload["request_id"][4:],
        "object": object_,
        "created": int(time.time()),
        "model": target.model,
    }


@router.post("/chat/completions")
async def chat_completions(body: ChatCompletionRequest, request: Request, tenant: TenantNow):
    max_tokens = body.limit()
    messages = [{"role": m.role, "content": m.text()} for m in body.messages]
    target, prompt_ids, call = await reserve_prompt(
        request, tenant, body.model, lambda g, t: g.encode_chat(t, messages), max_tokens
    )
    payload = _payload(tenant, prompt_ids, body, max_tokens)
    first, chunks = await open_generation(request, target, payload, call)

    def choice(chunk, is_first):
        delta = {"role": "assistant", "content": chunk["text"]} if is_first else {}
        if not is_first and chunk["text"]:
            delta = {"content": chunk["text"]}
        return {"index": 0, "delta": delta, "finish_reason": _finish(chunk["finish_reason"])}

    def final_choice(text, reason):
        message = {"role": "assistant", "content": text}
        return {"index": 0, "message": message, "finish_reason": reason}

    return await _respond(
        body,
        first,
        chunks,
        call,
        head=_head("chatcmpl-", payload, target, "chat.completion"),
        stream_object="chat.completion.chunk",
        choice=choice,
        final_choice=final_choice,
    )


@router.post("/completions")
async def completions(body: CompletionRequest, request: Request, tenant: TenantNow):
    prompt = body.text()
    target, prompt_ids, call = await reserve_prompt(
        request, tenant, body.model, lambda g, t: g.encode_text(t, prompt), body.max_tokens
    )
    payload = _payload(tenant, prompt_ids, body, body.max_tokens)
    first, chunks = await open_generation(request, target, payload, call)

    def choice(chunk, _is_first):
        reason = _finish(chunk["finish_reason"])
        return {"index": 0, "text": chunk["text"], "logprobs": None, "finish_reason": reason}

    def final_choice(text, reason):
        return {"index": 0, "text": text, "logprobs": None, "finish_reason": reason}

    return await _respond(
        body,
        first,
        chunks,
        call,
        head=_head("cmpl-", payload, target, "text_completion"),
        stream_object="text_completion",
        choice=choice,
        final_choice=final_choice,
    )
