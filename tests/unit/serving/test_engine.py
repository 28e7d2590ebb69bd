"""Engine: continuous batching, streaming text, stop conditions, aborts, failures, load."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import pytest
from transformers import PreTrainedModel, PreTrainedTokenizerFast

from moeplane.serving.engine import (
    Engine,
    EngineClosed,
    EngineLoad,
    GenerationChunk,
    GenerationRequest,
)
from moeplane.serving.runner import ModelRunner, SamplingParams, StepPlan
from tests.unit.serving.conftest import lively_model
from tests.unit.serving.test_runner import alone

GREEDY = SamplingParams(temperature=0)


@pytest.fixture(scope="module")
def model() -> PreTrainedModel:
    return lively_model("qwen3-moe-tiny")


def _in(plan: StepPlan) -> set[str]:
    return {seq for seq, _ in plan.decode} | {seq for seq, _, _ in plan.prefill}


class Recorder:
    """A step function over a real runner that records the plans it is given."""

    def __init__(self, runner: ModelRunner, fail_on: set[int] = frozenset()) -> None:
        self.runner = runner
        self.plans: list[StepPlan] = []
        self.fail_on = fail_on

    async def __call__(self, plan: StepPlan) -> dict[str, int]:
        self.plans.append(plan)
        if len(self.plans) in self.fail_on:
            raise RuntimeError("shard lost")
        return await asyncio.to_thread(self.runner.step, plan)


class Scripted:
    """A fake model: a sequence whose prompt is ``key`` emits ``scripts[key]`` token by token."""

    def __init__(self, scripts: dict[tuple[int, ...], list[int]], delay: float = 0.0) -> None:
        self.scripts = scripts
        self.delay = delay
        self.streams: dict[str, Iterator[int]] = {}
        self.plans: list[StepPlan] = []

    async def __call__(self, plan: StepPlan) -> dict[str, int]:
        self.plans.append(plan)
        await asyncio.sleep(self.delay)
        for seq_id in plan.release:
            self.streams.pop(seq_id, None)
        for seq_id, prompt, _ in plan.prefill:
            self.streams[seq_id] = iter(self.scripts[tuple(prompt)])
        live = [s for s, _, _ in plan.prefill] + [s for s, _ in plan.decode]
        return {seq_id: next(self.streams[seq_id]) for seq_id in live}


class Finishes(list):
    def __call__(self, request: GenerationRequest, prompt: int, completion: int, reason: str):
        self.append((request.request_id, prompt, completion, reason))


async def collect(engine: Engine, request: GenerationRequest) -> list[GenerationChunk]:
    return [chunk async for chunk in engine.generate(request)]


def request(rid: str, prompt: list[int], max_tokens: int, **kwargs) -> GenerationRequest:
    return GenerationRequest(rid, prompt, max_tokens, kwargs.pop("sampling", GREEDY), **kwargs)


def test_concurrent_requests_get_their_greedy_tokens_alone(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerFast
) -> None:
    prompts = {
        "a": ([1000 + i for i in range(9)], 7),
        "b": ([7, 8, 9], 3),
        "c": ([42], 10),
        "d": ([300 + i for i in range(20)], 5),
        "e": ([5, 6], 6),
    }
    step, finishes = Recorder(ModelRunner(model)), Finishes()
    engine = Engine(step, tokenizer, max_batch_size=3, eos_token_ids=set(), on_finish=finishes)

    async def main() -> dict[str, list[GenerationChunk]]:
        async def one(rid: str, delay: float) -> list[GenerationChunk]:
            await asyncio.sleep(delay)
            prompt, n = prompts[rid]
            return await collect(engine, request(rid, prompt, n))

        results = await asyncio.gather(*(one(r, 0.01 * i) for i, r in enumerate(prompts)))
        await engine.close()
        return dict(zip(prompts, results, strict=True))

    chunks = asyncio.run(main())
    for rid, (prompt, n) in prompts.items():
        tokens = [t for c in chunks[rid] for t in c.token_ids]
        assert tokens == alone(model, prompt, n), rid
        assert "".join(c.text for c in chunks[rid]) == tokenizer.decode(
            tokens, skip_special_tokens=True
        )
        assert [c.finish_reason for c in chunks[rid]] == [None] * (n - 1) + ["length"]
        assert [c.completion_tokens for c in chunks[rid]] == list(range(1, n + 1))
        assert {c.prompt_tokens for c in chunks[rid]} == {len(prompt)}
    assert sorted(finishes) == sorted((r, len(p), n, "length") for r, (p, n) in prompts.items())
    in_batch = [len(p.prefill) + len(p.decode) for p in step.plans]
    assert max(in_batch) == 3, in_batch  # full batches, never more
    # finished sequences are released with the next step; close() may cancel that last step
    # (its plan is recorded before the runner runs it), so only its releases are uncertain
    started = {seq for p in step.plans for seq, _, _ in p.prefill}
    released = {seq for p in step.plans[:-1] for seq in p.release}
    assert len(started) == len(prompts)
    assert step.runner.num_sequences <= len(started - released)
    assert started == released | set(step.plans[-1].release) | _in(step.plans[-1])


def test_eos_stops_without_text(model: PreTrainedModel, tokenizer: PreTrainedTokenizerFast):
    prompt = [11, 22, 33]
    tokens = alone(model, prompt, 8)
    cut = next(i for i in range(2, 8) if tokens[i] not in tokens[:i])
    finishes = Finishes()
    engine = Engine(
        Recorder(ModelRunner(model)),
        tokenizer,
        max_batch_size=4,
        eos_token_ids={tokens[cut]},
        on_finish=finishes,
    )
    chunks = asyncio.run(collect(engine, request("r", prompt, 8)))
    assert [t for c in chunks for t in c.token_ids] == tokens[: cut + 1]
    assert "".join(c.text for c in chunks) == tokenizer.decode(
        tokens[:cut], skip_special_tokens=True
    )
    assert chunks[-1].finish_reason == "stop"
    assert finishes == [("r", 3, cut + 1, "stop")]


def test_stop_string_truncates_and_never_leaks(tokenizer: PreTrainedTokenizerFast) -> None:
    ids = tokenizer.encode("Hello, world! Bye now")
    step, finishes = Scripted({(1,): ids}), Finishes()
    engine = Engine(step, tokenizer, max_batch_size=2, eos_token_ids=set(), on_finish=finishes)
    chunks = asyncio.run(collect(engine, request("r", [1], 50, stop=["nope", "! By"])))
    assert "".join(c.text for c in chunks) == "Hello, world"
    assert chunks[-1].finish_reason == "stop"
    assert finishes == [("r", 1, len(chunks), "stop")]
    # a stop string that never completes holds nothing back at the end
    engine = Engine(Scripted({(1,): ids}), tokenizer, max_batch_size=2, eos_token_ids=set())
    chunks = asyncio.run(collect(engine, request("s", [1], len(ids), stop=["now!"])))
    assert "".join(c.text for c in chunks) == "Hello, world! Bye now"
    assert chunks[-1].finish_reason == "length"


def test_half_characters_are_never_streamed(tokenizer: PreTrainedTokenizerFast) -> None:
    text = "𝄞 music, 你好 🤖"
    ids = tokenizer.encode(text)
    assert any(tokenizer.decode([i]) == "\ufffd" for i in ids), "want a split character"
    engine = Engine(Scripted({(1,): ids}), tokenizer, max_batch_size=1, eos_token_ids=set())
    chunks = asyncio.run(collect(engine, request("r", [1], len(ids))))
    assert all("\ufffd" not in c.text for c in chunks)
    assert "".join(c.text for c in chunks) == text
    assert chunks[0].text == ""  # the first byte of 𝄞 alone is not a character


@pytest.mark.parametrize("how", ["aclose", "cancel"])
def test_abort_releases_and_bills_once(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerFast, how: str
) -> None:
    step, finishes = Recorder(ModelRunner(model)), Finishes()
    engine = Engine(step, tokenizer, max_batch_size=4, eos_token_ids=set(), on_finish=finishes)

    async def main() -> None:
        read = []

        async def reader() -> None:
            async with contextlib.aclosing(engine.generate(request("r", [1, 2], 500))) as it:
                async for chunk in it:
                    read.append(chunk)
                    if len(read) == 3 and how == "aclose":
                        return
                    if len(read) == 3:
                        await asyncio.sleep(10)  # cancelled here

        task = asyncio.create_task(reader())
        while len(read) < 3:
            await asyncio.sleep(0.005)
        if how == "cancel":
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        for _ in range(200):  # the release rides on the next step
            if step.runner.num_sequences == 0:
                break
            await asyncio.sleep(0.005)
        await engine.close()

    asyncio.run(main())
    assert step.runner.num_sequences == 0
    assert any(p.release for p in step.plans)
    [(rid, prompt, completion, reason)] = finishes
    assert (rid, prompt, reason) == ("r", 2, "abort")
    assert 3 <= completion < 500


def test_abort_while_queued_bills_nothing(tokenizer: PreTrainedTokenizerFast) -> None:
    step, finishes = Scripted({(1,): list(range(100, 140)), (2,): [5]}, delay=0.002), Finishes()
    engine = Engine(step, tokenizer, max_batch_size=1, eos_token_ids=set(), on_finish=finishes)

    async def main() -> None:
        first = asyncio.create_task(collect(engine, request("a", [1], 40)))
        await asyncio.sleep(0)
        queued = asyncio.create_task(collect(engine, request("b", [2], 1)))
        await asyncio.sleep(0.01)
        assert engine.load().queued_requests == 1
        queued.cancel()
        await asyncio.gather(first, queued, return_exceptions=True)

    asyncio.run(main())
    assert sorted(finishes) == [("a", 1, 40, "length"), ("b", 0, 0, "abort")]
    assert all(seq_id.startswith("a") for p in step.plans for seq_id, _, _ in p.prefill)


def test_seeded_sampling_is_reproducible(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerFast
) -> None:
    sampling = SamplingParams(temperature=0.8, top_p=0.95, seed=7)
    engine = Engine(Recorder(ModelRunner(model)), tokenizer, max_batch_size=4, eos_token_ids=set())

    async def main() -> list[list[int]]:
        runs = await asyncio.gather(
            collect(engine, request("x", [3, 4, 5], 10, sampling=sampling)),
            collect(engine, request("y", [3, 4, 5], 10, sampling=sampling)),
            collect(engine, request("z", [9], 10, sampling=SamplingParams(seed=8))),
        )
        runs.append(await collect(engine, request("w", [3, 4, 5], 10, sampling=sampling)))
        return [[t for c in run for t in c.token_ids] for run in runs]

    x, y, _, w = asyncio.run(main())
    assert x == y == w


def test_failing_step_fails_in_flight_requests_then_recovers(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerFast
) -> None:
    step, finishes = Recorder(ModelRunner(model), fail_on={3}), Finishes()
    engine = Engine(step, tokenizer, max_batch_size=4, eos_token_ids=set(), on_finish=finishes)

    async def main():
        failed = await asyncio.gather(
            collect(engine, request("a", [1, 2, 3], 20)),
            collect(engine, request("b", [4, 5], 20)),
            return_exceptions=True,
        )
        after = await asyncio.wait_for(collect(engine, request("c", [1, 2, 3], 4)), timeout=30)
        await engine.close()
        return failed, after

    failed, after = asyncio.run(main())
    assert [str(e) for e in failed] == ["shard lost", "shard lost"]
    assert [t for c in after for t in c.token_ids] == alone(model, [1, 2, 3], 4)
    assert sorted(finishes) == [("a", 3, 2, "error"), ("b", 2, 2, "error"), ("c", 3, 4, "length")]
    assert {"a#0", "b#1"} <= {s for p in step.plans for s in p.release}


def test_load_counts_queued_and_in_flight_tokens(tokenizer: PreTrainedTokenizerFast) -> None:
    gate = asyncio.Event
    scripted = Scripted({(1, 2, 3): [7] * 5, (4, 5): [8] * 4})

    async def main() -> list[EngineLoad]:
        opened = gate()

        async def step(plan: StepPlan) -> dict[str, int]:
            await opened.wait()
            opened.clear()
            return await scripted(plan)

        engine = Engine(step, tokenizer, max_batch_size=1, eos_token_ids=set())
        tasks = [
            asyncio.create_task(collect(engine, request("a", [1, 2, 3], 5))),
            asyncio.create_task(collect(engine, request("b", [4, 5], 4))),
        ]
        await asyncio.sleep(0.01)
        loads = [engine.load()]  # a's prefill in flight, b queued
        opened.set()
        await asyncio.sleep(0.01)
        loads.append(engine.load())  # a has 1 of 5 tokens
        while not all(t.done() for t in tasks):
            opened.set()
            await asyncio.sleep(0.001)
        loads.append(engine.load())
        await engine.close()
        return loads

    loads = asyncio.run(main())
    assert loads == [
        EngineLoad(1, 1, 3 + 5 + 2 + 4),
        EngineLoad(1, 1, 4 + 2 + 4),
        EngineLoad(0, 0, 0),
    ]


def test_close_fails_waiting_requests(tokenizer: PreTrainedTokenizerFast) -> None:
    finishes = Finishes()

    async def stuck(plan: StepPlan) -> dict[str, int]:
        await asyncio.sleep(60)
        return {}

    engine = Engine(stuck, tokenizer, max_batch_size=1, eos_token_ids=set(), on_finish=finishes)

    async def main():
        tasks = [asyncio.create_task(collect(engine, request(r, [1], 3))) for r in "ab"]
        await asyncio.sleep(0.01)
        await engine.close()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        with pytest.raises(EngineClosed):
            await collect(engine, request("c", [1], 3))
        return results

    results = asyncio.run(main())
    assert all(isinstance(r, EngineClosed) for r in results)
    assert sorted(finishes) == [("a", 0, 0, "error"), ("b", 0, 0, "error"), ("c", 0, 0, "error")]


def test_bad_requests_are_refused(tokenizer: PreTrainedTokenizerFast) -> None:
    engine = Engine(Scripted({}), tokenizer, max_batch_size=1, eos_token_ids=set())
    with pytest.raises(ValueError, match="max_tokens"):
        asyncio.run(collect(engine, request("r", [1], 0)))
    with pytest.raises(ValueError, match="prompt"):
        asyncio.run(collect(engine, request("r", [], 3)))
