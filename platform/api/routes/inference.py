"""OpenAI-compatible inference: ``POST /v1/chat/completions`` and ``POST /v1/completions``.

Before the call: the tenant's deployment for ``model`` (another tenant's is a 404), the prompt
tokenised, a tpm reservation of prompt + max_tokens (429 with Retry-After when the bucket is
short) and the monthly token budget. After: the reservation is settled to the tokens actually
processed. Billing itself happens in the replica (`moeplane.serving.metering`), so a client that
disconnects mid-stream is billed for what was generated.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from moeplane.api.deps import TenantNow, TenantScope, in_short_transaction, take_rate
from moeplane.api.schemas.inference import ChatCompletionRequest, CompletionRequest
from moeplane.errors import QuotaExceeded, ServiceUnavailable
from moeplane.serving.gateway import Gateway, Target, check_context, resolve_target
from moeplane.store.ids import new_id
from moeplane.store.usage import month_totals

router = APIRouter(prefix="/v1", tags=["inference"])

_INFERENCE_KINDS = ("prompt_tokens", "completion_tokens")


def _gateway(request: Request) -> Gateway:
    return request.app.state.gateway


def _target_and_budget(session, tenant: TenantScope, model: str) -> tuple[Target, int]:
    target = resolve_target(session, tenant.id, model)
    totals = month_totals(session, tenant.id)
    return target, sum(totals.get(kind, 0) for kind in _INFERENCE_KINDS)


class _Call:
    """One inference call's accounting: reserve before, settle after (exactly once)."""

    def __init__(self, request: Request, tenant: TenantScope, reserved: int):
        self.limiter = request.app.state.limiter
        self.key = f"{tenant.id}:tpm"
        self.tpm = tenant.quota.tpm
        self.reserved = reserved
        self.settled = False

    def settle(self, actual: int) -> None:
        if not self.settled:
            self.settled = True
            self.limiter.settle(self.key, self.reserved, actual, self.tpm)


async def _prepare(
    request: Request, tenant: TenantScope, model: str, encode, max_tokens: int
) -> tuple[Target, list[int], _Call]:
    gateway = _gateway(request)
    target, used = await in_short_transaction(request, _target_and_budget, tenant, model)
    prompt_ids, context = await run_in_threadpool(encode, gateway, target)
    check_context(len(prompt_ids), max_tokens, context)
    need = len(prompt_ids) + max_tokens
    if used + need > tenant.quota.monthly_tokens:
        raise QuotaExceeded(
            f"This request may use {need} tokens but only "
            f"{max(0, tenant.quota.monthly_tokens - used)} of the monthly budget "
            f"{tenant.quota.monthly_tokens} remain",
            code="monthly_tokens",
        )
    await run_in_threadpool(
        take_rate, request.app.state.limiter, f"{tenant.id}:tpm", need, tenant.quota.tpm, "tokens"
    )
    return target, prompt_ids, _Call(request, tenant, need)


def _payload(tenant: TenantScope, prompt_ids: list[int], body, max_tokens: int) -> dict[str, Any]:
    return {
        "request_id": new_id("req"),
        "tenant_id": tenant.id,
        "prompt_ids": prompt_ids,
        "max_tokens": max_tokens,
        "sampling": body.sampling(),
        "stop": body.stops(),
    }


async def _open(request: Request, target: Target, payload: dict[str, Any], call: _Call):
    """Start the generation and wait for its first chunk, so that a failure before any output
    is still a proper 503 (not a broken stream)."""
    gateway = _gateway(request)
    try:
        handle = await run_in_threadpool(gateway.handle, target.app_name)
        chunks = gateway.stream(handle, payload)
        first = await chunks.__anext__()
    except ServiceUnavailable:
        call.settle(0)
        raise
    except Exception as exc:  # the replica or its shard died: clear 503, nothing billed
        call.settle(0)
        raise ServiceUnavailable(
            f"The deployment could not serve the request: {type(exc).__name__}: {exc}"[:500],
            code="replica_failed",
        ) from exc
    return first, chunks


def _usage(chunk: dict[str, Any]) -> dict[str, int]:
    prompt, completion = chunk["prompt_tokens"], chunk["completion_tokens"]
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _finish(reason: str | None) -> str | None:
    return {"abort": "stop"}.get(reason, reason) if reason else None


async def _collect(first, chunks, call: _Call) -> tuple[str, dict[str, Any]]:
    text, last = first["text"], first
    try:
        if first["finish_reason"] is None:
            async for chunk in chunks:
                text += chunk["text"]
                last = chunk
                if chunk["finish_reason"] is not None:
                    break
    except Exception as exc:
        raise ServiceUnavailable(
            f"The deployment failed mid-generation: {type(exc).__name__}: {exc}"[:500],
            code="replica_failed",
        ) from exc
    finally:
        call.settle(last["prompt_tokens"] + last["completion_tokens"])
        await chunks.aclose()
    return text, last


def _sse(data: dict[str, Any] | str) -> bytes:
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n".encode()


async def _stream(first, chunks, call: _Call, frame, include_usage: bool) -> AsyncIterator[bytes]:
    """SSE frames; ``frame(chunk, first)`` shapes one engine chunk as an OpenAI chunk."""
    last = first
    try:
        yield _sse(frame(first, True))
        if first["finish_reason"] is None:
            async for chunk in chunks:
                last = chunk
                yield _sse(frame(chunk, False))
                if chunk["finish_reason"] is not None:
                    break
        if include_usage:
            yield _sse(frame(last, False, usage=True))
        yield _sse("[DONE]")
    except Exception as exc:  # headers are sent: report in-band, as OpenAI does
        error = {"message": f"The deployment failed mid-stream: {exc}"[:500], "type": "server"}
        yield _sse({"error": error | {"code": "replica_failed"}})
    finally:
        call.settle(last["prompt_tokens"] + last["completion_tokens"])
        await chunks.aclose()


@router.post("/chat/completions")
async def chat_completions(body: ChatCompletionRequest, request: Request, tenant: TenantNow):
    max_tokens = body.limit()
    messages = [{"role": m.role, "content": m.text()} for m in body.messages]
    target, prompt_ids, call = await _prepare(
        request, tenant, body.model, lambda g, t: g.encode_chat(t, messages), max_tokens
    )
    payload = _payload(tenant, prompt_ids, body, max_tokens)
    first, chunks = await _open(request, target, payload, call)
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
                return base | {"choices": [], "usage": _usage(chunk)}
            delta = {"role": "assistant", "content": chunk["text"]} if is_first else {}
            if not is_first and chunk["text"]:
                delta = {"content": chunk["text"]}
            choice = {"index": 0, "delta": delta, "finish_reason": _finish(chunk["finish_reason"])}
            return base | {"choices": [choice]}

        include = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(
            _stream(first, chunks, call, frame, include), media_type="text/event-stream"
        )
    text, last = await _collect(first, chunks, call)
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
        "usage": _usage(last),
    }


@router.post("/completions")
async def completions(body: CompletionRequest, request: Request, tenant: TenantNow):
    prompt = body.text()
    target, prompt_ids, call = await _prepare(
        request, tenant, body.model, lambda g, t: g.encode_text(t, prompt), body.max_tokens
    )
    payload = _payload(tenant, prompt_ids, body, body.max_tokens)
    first, chunks = await _open(request, target, payload, call)
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
                return base | {"choices": [], "usage": _usage(chunk)}
            choice = {
                "index": 0,
                "text": chunk["text"],
                "logprobs": None,
                "finish_reason": _finish(chunk["finish_reason"]),
            }
            return base | {"choices": [choice]}

        include = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(
            _stream(first, chunks, call, frame, include), media_type="text/event-stream"
        )
    text, last = await _collect(first, chunks, call)
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
        "usage": _usage(last),
    }
