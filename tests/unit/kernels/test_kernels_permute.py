import pytest
import torch

from moeplane.kernels import permute, unpermute


@pytest.mark.parametrize(("tokens", "experts", "top_k"), [(1, 4, 1), (9, 8, 2), (257, 64, 8)])
def test_permute_sorts_rows_by_expert(tokens, experts, top_k):
    ids = torch.stack([torch.randperm(experts)[:top_k] for _ in range(tokens)])  # (tokens, top_k)
    plan = permute(ids, experts)
    flat = ids.reshape(-1)  # (S,)
    assert torch.equal(plan.sorted_expert_ids, flat[plan.sorted_rows])
    assert bool((plan.sorted_expert_ids[1:] >= plan.sorted_expert_ids[:-1]).all())
    assert torch.equal(plan.sorted_rows[plan.inverse], torch.arange(flat.numel()))
    assert torch.equal(plan.token_index, plan.sorted_rows // top_k)
    assert torch.equal(plan.counts, torch.bincount(flat, minlength=experts))
    assert plan.num_rows == tokens * top_k


def test_row_range_is_contiguous_slice_of_experts():
    ids = torch.tensor([[0, 3], [1, 3], [2, 0], [3, 1]])
    plan = permute(ids, 4)
    lo, hi = plan.row_range((1, 3))
    assert (lo, hi) == (2, 5)  # expert 0 has 2 rows, experts 1 and 2 have 2 + 1
    assert plan.sorted_expert_ids[lo:hi].tolist() == [1, 1, 2]
    assert plan.row_range(None) == (0, 8)


def test_unpermute_is_weighted_sum_over_top_k():
    ids = torch.tensor([[0, 2], [1, 0], [2, 1]])  # (tokens=3, top_k=2)
    weights = torch.tensor([[0.5, 0.25], [1.0, 2.0], [3.0, 4.0]])
    plan = permute(ids, 3)
    rows = torch.arange(6.0).unsqueeze(-1) + 1  # (S, 1): flat row r holds r + 1
    expert_out = rows[plan.sorted_rows]  # (S, 1) in sorted order
    out = unpermute(expert_out, weights, plan)
    expected = (rows.view(3, 2) * weights).sum(-1, keepdim=True)  # (tokens, 1)
    torch.testing.assert_close(out, expected)
    # Only the rows of experts 1..2: expert 0's pairs contribute zero.
    lo, hi = plan.row_range((1, 3))
    part = unpermute(expert_out[lo:hi], weights, plan, rows=(lo, hi))
    keep = (ids >= 1).float()  # (tokens, top_k)
    torch.testing.assert_close(part, (rows.view(3, 2) * weights * keep).sum(-1, keepdim=True))


def test_sentinel_ids_sort_last_and_belong_to_no_range():
    ids = torch.tensor([[0, 4], [4, 1]])  # 4 == num_experts: an expert-parallel sentinel
    plan = permute(ids, 4)
    assert plan.sorted_expert_ids.tolist() == [0, 1, 4, 4]
    assert plan.row_range((0, 4)) == (0, 2)
