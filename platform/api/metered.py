"""What every metered model call shares: chat and text completions, embeddings, the support bot.

Before the call (one worker-thread hop): the tenant's deployment for ``model`` (another
tenant's is a 404), the tokens the call may use, the monthly token budget and a tpm reservation
(429 with Retry-After when the bucket is short). After: the reservation is settled to the tokens
actually processed, exactly once. Billing itself happens in the replica
(`moeplane.serving.metering`), so a client that disconnects mid-stream is billed for what was
generated. Tokens the API processes itself (the support bot embeds its retrieval query in this
process) go through `reserve_in_process` and `bill_in_process`: the same budget check, tpm
reservation and usage kind, with no replica in between.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session

from moeplane.api.deps import TenantScope, in_short_transaction, take_rate
from moeplane.errors import QuotaExceeded, ServiceUnavailable
from moeplane.limits import Limiter
from moeplane.serving.gateway import Gateway, Target, check_context, resolve_target
from moeplane.store.usage import month_totals, record_usage

__all__ = [
    "INFERENCE_KINDS",
    "TokenReservation",
    "bill_in_process",
    "collect",
    "gateway_of",
    "open_generation",
    "replica_failed",
    "reserve",
    "reserve_in_process",
    "reserve_prompt",
    "serve_handle",
    "sse",
    "stream_sse",
    "usage_of",
]

INFERENCE_KINDS = ("prompt_tokens", "completion_tokens")  # what the monthly budget counts

T = TypeVar("T")


def gateway_of(request: Request) -> Gateway:
    return request.app.state.gateway


class TokenReservation:
    """One call's tpm accounting: reserved before, settled after (exactly once)."""

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


def _admit(session: Session, limiter: Limiter, tenant: TenantScope, need: int) -> None:
    """The monthly budget check and the tpm reservation of ``need`` tokens (429 when short)."""
    totals = month_totals(session, tenant.id)
    _check_budget(tenant, sum(totals.get(k, 0) for k in INFERENCE_KINDS), need)
    take_rate(limiter, f"{tenant.id}:tpm", need, tenant.quota.tpm, "tokens")


def _check_budget(tenant: TenantScope, used: int, need: int) -> None:
    if used + need > tenant.quota.monthly_tokens:
        raise QuotaExceeded(
            f"This request may use {need} tokens but only "
            f"{max(0, tenant.quota.monthly_tokens - used)} of the monthly budget "
            f"{tenant.quota.monthly_tokens} remain",
            code="monthly_tokens",
        )


async def reserve(
    request: Request,
    tenant: TenantScope,
    model: str,
    measure: Callable[[Gateway, Target], tuple[T, int]],
    *,
    kind: str = "llm",
) -> tuple[Target, T, TokenReservation]:
    """Resolve ``model`` to the tenant's deployment of ``kind``, then ``measure(gateway,
    target) -> (what the call sends, tokens it may use)``, check the monthly budget and take
    that many tokens from the tpm bucket; all in one worker-thread hop (each hop costs on a
    busy host)."""
    gateway = gateway_of(request)
    limiter = request.app.state.limiter

    def prepare(session) -> tuple[Target, T, int]:  # type: ignore[no-untyped-def]
        target = resolve_target(session, tenant.id, model, kind=kind)
        measured, need = measure(gateway, target)
        _admit(session, limiter, tenant, need)
        return target, measured, need

    target, measured, need = await in_short_transaction(request, prepare)
    return target, measured, TokenReservation(request, tenant, need)


async def reserve_in_process(
    request: Request, tenant: TenantScope, measure: Callable[[Session], tuple[T, int]]
) -> tuple[T, TokenReservation]:
    """`reserve` for tokens this process will handle itself (no deployment): ``measure(session)
    -> (what it read, tokens)`` runs in the same short transaction as the budget check."""
    limiter = request.app.state.limiter

    def prepare(session: Session) -> tuple[T, int]:
        measured, need = measure(session)
        _admit(session, limiter, tenant, need)
        return measured, need

    measured, need = await in_short_transaction(request, prepare)
    return measured, TokenReservation(request, tenant, need)


async def bill_in_process(
    request: Request, tenant: TenantScope, call: TokenReservation, tokens: int
) -> None:
    """Bill ``tokens`` processed in this process as usage ``prompt_tokens`` (what an embeddings
    replica records for the same work) and settle the reservation to them."""
    try:
        await in_short_transaction(request, record_usage, tenant.id, "prompt_tokens", tokens)
    finally:
        call.settle(tokens)


async def reserve_prompt(
    request: Request,
    tenant: TenantScope,
    model: str,
    encode: Callable[[Gateway, Target], tuple[list[int], int]],
    max_tokens: int,
) -> tuple[Target, list[int], TokenReservation]:
    """`reserve` for a generation: ``encode(gateway, target) -> (prompt ids, context)``; the
    prompt must leave room for ``max_tokens``, and prompt + max_tokens are reserved."""

    def measure(gateway: Gateway, target: Target) -> tuple[list[int], int]:
        prompt_ids, context = encode(gateway, target)
        check_context(len(prompt_ids), max_tokens, context)
        return prompt_ids, len(prompt_ids) + max_tokens

    return await reserve(request, tenant, model, measure)


async def serve_handle(request: Request, target: Target) -> Any:
    """The app's streaming Serve handle (connecting to Ray in a thread on first use)."""
    gateway = gateway_of(request)
    return gateway.cached_handle(target.app_name) or await run_in_threadpool(
        gateway.handle, target.app_name
    )


def replica_failed(exc: Exception, what: str = "could not serve the request") -> ServiceUnavailable:
    return ServiceUnavailable(
        f"The deployment {what}: {type(exc).__name__}: {exc}"[:500], code="replica_failed"
    )


async def open_generation(
    request: Request, target: Target, payload: dict[str, Any], call: TokenReservation
):
    """Start a generation and wait for its first chunk, so that a failure before any output
    is still a proper 503 (not a broken stream). Returns (first chunk, the chunk iterator)."""
    try:
        handle = await serve_handle(request, target)
        chunks = gateway_of(request).stream(handle, payload)
        first = await chunks.__anext__()
    except ServiceUnavailable:
        call.settle(0)
        raise
    except Exception as exc:  # the replica or its shard died: clear 503, nothing billed
        call.settle(0)
        raise replica_failed(exc) from exc
    return first, chunks


async def collect(first, chunks, call: TokenReservation) -> tuple[str, dict[str, Any]]:
    """The whole generation's text and its last chunk (finish reason, token counts)."""
    text, last = first["text"], first
    try:
        if first["finish_reason"] is None:
            async for chunk in chunks:  # ends after the chunk with the finish reason
                text += chunk["text"]
                last = chunk
    except Exception as exc:
        raise replica_failed(exc, "failed mid-generation") from exc
    finally:
        call.settle(last["prompt_tokens"] + last["completion_tokens"])
        await chunks.aclose()
    return text, last


def sse(data: dict[str, Any] | str) -> bytes:
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n".encode()


async def stream_sse(
    first, chunks, call: TokenReservation, frame, include_usage: bool
) -> AsyncIterator[bytes]:
    """SSE frames; ``frame(chunk, first, usage=False)`` shapes one engine chunk for the client.
    Ends with ``[DONE]``; an error after the headers went out is reported in-band."""
    last = first
    try:
        yield sse(frame(first, True))
        if first["finish_reason"] is None:
            async for chunk in chunks:  # ends after the chunk with the finish reason
                last = chunk
                yield sse(frame(chunk, False))
        if include_usage:
            yield sse(frame(last, False, usage=True))
        yield sse("[DONE]")
    except Exception as exc:  # headers are sent: report in-band, as OpenAI does
        error = {"message": f"The deployment failed mid-stream: {exc}"[:500], "type": "server"}
        yield sse({"error": error | {"code": "replica_failed"}})
    finally:
        call.settle(last["prompt_tokens"] + last["completion_tokens"])
        await chunks.aclose()


def usage_of(chunk: dict[str, Any]) -> dict[str, int]:
    prompt, completion = chunk["prompt_tokens"], chunk["completion_tokens"]
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
