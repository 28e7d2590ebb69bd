"""ModelRunner: continuous batching gives each sequence exactly what it would get alone."""

from __future__ import annotations

import pickle
from dataclasses import dataclass

import pytest
import torch
from transformers import PreTrainedModel

from moeplane.serving.runner import ModelRunner, SamplingParams, StepPlan
from tests.unit.serving.conftest import lively_model

GREEDY = SamplingParams(temperature=0)


@dataclass
class Job:
    prompt: list[int]
    max_tokens: int
    join_step: int = 0
    sampling: SamplingParams = GREEDY


def run_schedule(runner: ModelRunner, jobs: dict[str, Job]) -> tuple[dict[str, list[int]], list]:
    """Drive ``runner`` as an engine would: join at ``join_step``, leave after ``max_tokens``."""
    out: dict[str, list[int]] = {seq_id: [] for seq_id in jobs}
    last: dict[str, int] = {}
    finished: list[str] = []
    plans = []
    step = 0
    while any(len(out[s]) < j.max_tokens for s, j in jobs.items()):
        plan = StepPlan(
            prefill=[(s, j.prompt, j.sampling) for s, j in jobs.items() if j.join_step == step],
            decode=[(s, t) for s, t in last.items()],
            release=finished,
        )
        plans.append(plan)
        finished = []
        for seq_id, token in runner.step(plan).items():
            out[seq_id].append(token)
            last[seq_id] = token
            if len(out[seq_id]) == jobs[seq_id].max_tokens:
                del last[seq_id]
                finished.append(seq_id)
        step += 1
    return out, plans


def alone(model: PreTrainedModel, prompt: list[int], n: int) -> list[int]:
    ids = torch.tensor([prompt])
    return model.generate(ids, do_sample=False, max_new_tokens=n, min_new_tokens=n)[
        0, len(prompt) :
    ].tolist()


STAGGERED = {
    "a": Job(list(range(1000, 1011)), 9),
    "b": Job([7, 8, 9], 4),
    "c": Job([42], 12, join_step=2),
    "d": Job(list(range(300, 330)), 5, join_step=3),
    "e": Job([5, 6], 6, join_step=5),  # joins after b has left: the batch shrinks and regrows
}


@pytest.fixture(scope="module", params=["qwen3-moe-tiny", "qwen3-tiny"])
def model(request: pytest.FixtureRequest) -> PreTrainedModel:
    return lively_model(request.param)


def test_greedy_continuous_batching_matches_generate_alone(model: PreTrainedModel) -> None:
    runner = ModelRunner(model)
    out, plans = run_schedule(runner, STAGGERED)
    for seq_id, job in STAGGERED.items():
        assert out[seq_id] == alone(model, job.prompt, job.max_tokens), seq_id
    assert len({len(p.decode) for p in plans}) > 2, "the batch size should vary"
    assert runner.num_sequences == 1  # the last one finished; its release would be next step
    runner.step(StepPlan(prefill=[], decode=[], release=[*plans[-1].release, "e", "c", "a"]))
    assert runner.num_sequences == 0


def test_expert_counts_count_every_token_once(model: PreTrainedModel) -> None:
    runner = ModelRunner(model)
    run_schedule(runner, STAGGERED)
    counts = runner.expert_counts()
    if not getattr(model.config, "num_experts", 0):
        assert counts == []
        return
    # prefill counts the prompt; each later token is fed once (the last sampled one never is)
    tokens = sum(len(j.prompt) + j.max_tokens - 1 for j in STAGGERED.values())
    top_k = model.config.num_experts_per_tok
    assert len(counts) == model.config.num_hidden_layers
    assert all(len(layer) == model.config.num_experts for layer in counts)
    assert [sum(layer) for layer in counts] == [tokens * top_k] * len(counts)


def test_non_sampling_runner_keeps_the_same_state(model: PreTrainedModel) -> None:
    leader, follower = ModelRunner(model), ModelRunner(model, sample=False)
    _, plans = run_schedule(leader, STAGGERED)
    counts = leader.expert_counts()
    for plan in plans:
        assert follower.step(plan) == {}
    assert follower.num_sequences == leader.num_sequences
    assert follower.expert_counts() == counts
    assert leader.expert_counts() == counts  # the follower's forwards are not the leader's


def test_released_id_can_be_reused_in_the_same_step() -> None:
    model = lively_model("qwen3-moe-tiny")
    runner = ModelRunner(model)
    first = runner.step(StepPlan(prefill=[("x", [1, 2, 3], GREEDY), ("y", [9], GREEDY)]))
    runner.step(StepPlan(prefill=[], decode=[("x", first["x"]), ("y", first["y"])], release=[]))
    prompt = [11, 12, 13, 14]
    got = runner.step(StepPlan(prefill=[("x", prompt, GREEDY)], decode=[], release=["x", "y"]))
    got = [got["x"], *runner.step(StepPlan(decode=[("x", got["x"])])).values()]
    assert got == alone(model, prompt, 2)


def test_seeded_sampling_is_reproducible_whatever_the_batch() -> None:
    model = lively_model("qwen3-moe-tiny")
    seeded = SamplingParams(temperature=1.0, top_p=0.9, seed=1234)
    solo, _ = run_schedule(ModelRunner(model), {"s": Job([1, 2, 3], 12, sampling=seeded)})
    crowd = {
        "s": Job([1, 2, 3], 12, sampling=seeded),
        "o": Job([4, 5], 12, sampling=SamplingParams(temperature=1.0)),
        "p": Job([6], 8, join_step=1, sampling=SamplingParams(seed=9)),
    }
    crowded, _ = run_schedule(ModelRunner(model), crowd)
    assert crowded["s"] == solo["s"]
    other, _ = run_schedule(
        ModelRunner(model), {"s": Job([1, 2, 3], 12, sampling=SamplingParams(seed=4321))}
    )
    assert other["s"] != solo["s"]


def test_tiny_top_p_is_greedy() -> None:
    model = lively_model("qwen3-tiny")
    nucleus = SamplingParams(temperature=1.0, top_p=1e-6, seed=0)
    out, _ = run_schedule(ModelRunner(model), {"s": Job([3, 1, 4, 1, 5], 6, sampling=nucleus)})
    assert out["s"] == alone(model, [3, 1, 4, 1, 5], 6)


def test_bad_plans_are_refused() -> None:
    runner = ModelRunner(lively_model("qwen3-tiny"))
    with pytest.raises(ValueError, match="not running"):
        runner.step(StepPlan(decode=[("ghost", 1)]))
    runner.step(StepPlan(prefill=[("a", [1], GREEDY)]))
    with pytest.raises(ValueError, match="already running"):
        runner.step(StepPlan(prefill=[("a", [1], GREEDY)]))
    with pytest.raises(ValueError, match="empty prompt"):
        runner.step(StepPlan(prefill=[("b", [], GREEDY)]))


def test_plans_pickle() -> None:
    plan = StepPlan(prefill=[("a", [1, 2], SamplingParams(0.7, 0.9, 3))], decode=[("b", 5)])
    assert pickle.loads(pickle.dumps(plan)) == plan


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"temperature": -0.1}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"seed": -1}, "seed"),
        ({"seed": 1.5}, "seed"),
    ],
)
def test_sampling_params_are_validated(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        SamplingParams(**kwargs)


def test_top_p_draws_only_from_the_nucleus_and_ignores_last_bit_noise() -> None:
    import torch

    from moeplane.serving._sampling import make_generator, sample_next

    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    nucleus = SamplingParams(temperature=1.0, top_p=0.75, seed=3)  # keeps tokens 0 and 1
    gen = make_generator(nucleus, torch.device("cpu"))
    drawn = {sample_next(logits, nucleus, gen) for _ in range(400)}
    assert drawn == {0, 1}
    # a flat distribution (a random model's): 1e-7 of noise (another batch's GEMM kernels)
    # reorders a sort of near-ties, but a seeded draw must not move (drawing over the sorted
    # list, 30 of these 40 draws moved)
    flat = torch.randn(50_000, generator=torch.Generator().manual_seed(0)) * 1e-3
    noisy = flat + torch.randn(50_000, generator=torch.Generator().manual_seed(1)) * 1e-7
    same = []
    for seed in range(40):
        params = SamplingParams(temperature=1.0, top_p=0.9, seed=seed)
        a = sample_next(flat, params, make_generator(params, torch.device("cpu")))
        b = sample_next(noisy, params, make_generator(params, torch.device("cpu")))
        same.append(a == b)
    assert sum(same) >= 38, same
