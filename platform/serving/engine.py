"""The replica's continuous-batching loop: requests in, streamed chunks out.

One background task issues steps, one at a time, through an async ``step(plan)`` function: the
caller decides where the model runs (a `ModelRunner` in a thread, or a gang of expert-shard
actors that must see their steps in one order so their all-reduces line up). Between steps,
queued requests join the running batch (up to ``max_batch_size``) and finished or abandoned
sequences leave it; the loop sleeps while there is nothing to do.

Every request ends exactly once, and ``on_finish`` hears of it once: that is the metering hook,
so tokens a client never read because it went away are still billed, and nothing is billed
twice. ``finish_reason`` is "stop" (EOS or a stop string), "length" (``max_tokens``), "abort"
(the consumer stopped reading) or, for ``on_finish`` only, "error" (the step failed, or the
engine closed, before the request finished).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from moeplane.serving._detokenize import IncrementalDetokenizer, StopMatcher
from moeplane.serving.runner import SamplingParams, StepPlan

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = ["Engine", "EngineClosed", "EngineLoad", "GenerationChunk", "GenerationRequest"]

log = logging.getLogger(__name__)

StepFn = Callable[[StepPlan], Awaitable[dict[str, int]]]
FinishHook = Callable[["GenerationRequest", int, int, str], None]


class EngineClosed(RuntimeError):
    """The engine was closed before (or while) serving the request."""


@dataclass
class GenerationRequest:
    request_id: str
    prompt_ids: list[int]
    max_tokens: int
    sampling: SamplingParams
    stop: list[str] = field(default_factory=list)  # stop strings (not included in the text)


@dataclass
class GenerationChunk:
    text: str  # new text since the last chunk
    token_ids: list[int]  # tokens generated since the last chunk (EOS included, not its text)
    finish_reason: str | None  # None while running, then "stop" | "length" | "abort"
    prompt_tokens: int
    completion_tokens: int  # so far


@dataclass(frozen=True)
class EngineLoad:
    """What the token autoscaling policy reads from each replica."""

    queued_requests: int
    running_requests: int
    tokens: int  # prompt tokens not yet prefilled + completion tokens not yet generated


class _Sequence:
    """Engine-side state of one request."""

    def __init__(
        self, seq_id: str, request: GenerationRequest, tokenizer: PreTrainedTokenizerBase
    ) -> None:
        self.seq_id = seq_id
        self.request = request
        self.out: asyncio.Queue[GenerationChunk | BaseException] = asyncio.Queue()
        self.generated: list[int] = []
        self.prefilled = False
        self.finished = False
        self.detokenizer = IncrementalDetokenizer(tokenizer)
        self.stop = StopMatcher(request.stop)

    @property
    def prompt_tokens(self) -> int:
        return len(self.request.prompt_ids)

    def chunk(self, text: str, token_ids: list[int], finish: str | None) -> GenerationChunk:
        return GenerationChunk(
            text, token_ids, finish, self.prompt_tokens, completion_tokens=len(self.generated)
        )


class Engine:
    """Continuous batching over an async step function; see the module docstring."""

    def __init__(
        self,
        step: StepFn,
        tokenizer: PreTrainedTokenizerBase,
        *,
        max_batch_size: int,
        eos_token_ids: set[int],
        on_finish: FinishHook | None = None,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        self._step = step
        self._tokenizer = tokenizer
        self.max_batch_size = max_batch_size
        self.eos_token_ids = set(eos_token_ids)
        self._on_finish = on_finish
        self._waiting: deque[_Sequence] = deque()
        self._running: dict[str, _Sequence] = {}  # seq_id -> sequence, in batch order
        self._to_release: list[str] = []
        self._ids = itertools.count()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._closed = False

    # -- public -----------------------------------------------------------------------------
    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        """Queue ``request`` and yield its chunks as tokens arrive; the last one has a reason."""
        seq = _Sequence(f"{request.request_id}#{next(self._ids)}", request, self._tokenizer)
        try:
            self._admit(seq)
            while True:
                item = await seq.out.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if item.finish_reason is not None:
                    return
        finally:
            if not seq.finished:  # the consumer went away (closed or cancelled) mid-stream
                self._abort(seq)

    def load(self) -> EngineLoad:
        queued = sum(s.prompt_tokens + s.request.max_tokens for s in self._waiting)
        running = sum(
            (0 if s.prefilled else s.prompt_tokens) + s.request.max_tokens - len(s.generated)
            for s in self._running.values()
        )
        return EngineLoad(len(self._waiting), len(self._running), queued + running)

    async def close(self) -> None:
        """Stop the loop; requests still queued or running fail with EngineClosed."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        error = EngineClosed("the engine was closed")
        for seq in [*self._waiting, *self._running.values()]:
            self._fail(seq, error)
        self._waiting.clear()
        self._running.clear()

    # -- requests -----------------------------------------------------------------------------
    def _admit(self, seq: _Sequence) -> None:
        request = seq.request
        problem = None
        if self._closed:
            problem = EngineClosed("the engine is closed")
        elif not request.prompt_ids:
            problem = ValueError("prompt_ids must not be empty")
        elif request.max_tokens < 1:
            problem = ValueError(f"max_tokens must be >= 1, got {request.max_tokens}")
        if problem is not None:
            self._finish(seq, "error")
            raise problem
        self._waiting.append(seq)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._loop())
        self._wakeup.set()

    def _abort(self, seq: _Sequence) -> None:
        if seq in self._waiting:
            self._waiting.remove(seq)
        elif self._running.pop(seq.seq_id, None) is not None:
            self._to_release.append(seq.seq_id)  # the runner may hold its cache: drop it
            self._wakeup.set()
        self._finish(seq, "abort")

    def _finish(self, seq: _Sequence, reason: str) -> None:
        """Mark ``seq`` done and tell the metering hook, exactly once."""
        if seq.finished:
            return
        seq.finished = True
        if self._on_finish is None:
            return
        prompt = seq.prompt_tokens if seq.prefilled else 0  # billed only once computed
        try:
            self._on_finish(seq.request, prompt, len(seq.generated), reason)
        except Exception:  # a metering failure must not stop the loop serving others
            log.exception("on_finish failed for request %s", seq.request.request_id)

    def _fail(self, seq: _Sequence, error: BaseException) -> None:
        if not seq.finished:
            seq.out.put_nowait(error)
            self._finish(seq, "error")

    # -- the loop -----------------------------------------------------------------------------
    async def _loop(self) -> None:
        try:
            await self._serve()
        except Exception as error:  # a bug here must not leave requests waiting forever
            log.exception("engine loop crashed")
            for seq in [*self._waiting, *self._running.values()]:
                self._fail(seq, error)
            self._waiting.clear()
            self._running.clear()
            raise

    async def _serve(self) -> None:
        while True:
            if not (self._waiting or self._running or self._to_release):
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            plan = self._plan()
            try:
                tokens = await self._step(plan)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # handed to each in-flight request's iterator
                log.warning("step failed; failing %d requests: %r", len(self._running), error)
                for seq in self._running.values():
                    self._fail(seq, error)
                    self._to_release.append(seq.seq_id)
                self._running.clear()
                # Releases of the failed plan are not retried: a step that cannot even drop
                # caches would otherwise spin; the runner is suspect and a health check decides.
                continue
            self._apply(plan, tokens)

    def _plan(self) -> StepPlan:
        decode = [(s.seq_id, s.generated[-1]) for s in self._running.values()]
        prefill = []
        while self._waiting and len(self._running) < self.max_batch_size:
            seq = self._waiting.popleft()
            self._running[seq.seq_id] = seq
            prefill.append((seq.seq_id, list(seq.request.prompt_ids), seq.request.sampling))
        release, self._to_release = self._to_release, []
        return StepPlan(prefill=prefill, decode=decode, release=release)

    def _apply(self, plan: StepPlan, tokens: dict[str, int]) -> None:
        for seq_id, _, _ in plan.prefill:
            seq = self._running.get(seq_id)
            if seq is not None:
                seq.prefilled = True
        for seq_id in [s for s, _, _ in plan.prefill] + [s for s, _ in plan.decode]:
            seq = self._running.get(seq_id)
            if seq is None:  # aborted while the step ran
                continue
            if seq_id not in tokens:
                self._fail(seq, RuntimeError(f"the step returned no token for {seq_id}"))
                del self._running[seq_id]
                self._to_release.append(seq_id)
                continue
            reason = self._advance(seq, tokens[seq_id])
            if reason is not None:
                del self._running[seq_id]
                self._to_release.append(seq_id)

    def _advance(self, seq: _Sequence, token: int) -> str | None:
        """Take one new token: stream its text, decide whether the sequence is done."""
        seq.generated.append(token)
        reason = None
        if token in self.eos_token_ids:  # its text is not part of the output
            text, _ = _final_text(seq)
            reason = "stop"
        else:
            text, stopped = seq.stop.feed(seq.detokenizer.add(token))
            if stopped:
                reason = "stop"
            elif len(seq.generated) >= seq.request.max_tokens:
                tail, stopped = _final_text(seq)
                text += tail
                reason = "stop" if stopped else "length"
        seq.out.put_nowait(seq.chunk(text, [token], reason))
        if reason is not None:
            self._finish(seq, reason)
        return reason


def _final_text(seq: _Sequence) -> tuple[str, bool]:
    """The rest of the text once no more tokens come (cut at a stop string if one completes)."""
    text, stopped = seq.stop.feed(seq.detokenizer.flush())
    return (text, True) if stopped else (text + seq.stop.flush(), False)
