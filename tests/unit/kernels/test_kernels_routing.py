import pytest
import torch
from transformers import Qwen3MoeConfig
from transformers.models.qwen3_moe.modeling_qwen3_moe import Qwen3MoeTopKRouter

from moeplane.kernels import route
from tests.unit.kernels.kernels_reference import ref_route


@pytest.mark.parametrize("tokens", [1, 5, 300])
@pytest.mark.parametrize(("experts", "top_k"), [(4, 1), (8, 2), (64, 8), (128, 8)])
@pytest.mark.parametrize("renormalize", [True, False])
def test_route_matches_reference(tokens, experts, top_k, renormalize):
    logits = torch.randn(tokens, experts, generator=torch.Generator().manual_seed(tokens))
    weights, ids = route(logits, top_k, renormalize)
    ref_weights, ref_ids = ref_route(logits, top_k, renormalize)
    assert weights.shape == ids.shape == (tokens, top_k)
    torch.testing.assert_close(ids, ref_ids)
    torch.testing.assert_close(weights, ref_weights)


def test_route_bf16_softmax_in_fp32():
    logits = torch.randn(16, 8).bfloat16()
    weights, ids = route(logits, 2, renormalize=True)
    assert weights.dtype == torch.bfloat16 and ids.dtype == torch.int64
    ref_weights, ref_ids = ref_route(logits.float(), 2, renormalize=True)
    torch.testing.assert_close(ids, ref_ids)
    torch.testing.assert_close(weights, ref_weights.bfloat16())


@pytest.mark.parametrize("norm_topk_prob", [True, False])
def test_route_matches_qwen3_router(norm_topk_prob):
    config = Qwen3MoeConfig(
        hidden_size=32, num_experts=8, num_experts_per_tok=2, norm_topk_prob=norm_topk_prob
    )
    router = Qwen3MoeTopKRouter(config)
    torch.nn.init.normal_(router.weight)
    hidden = torch.randn(10, 32)
    logits, ref_weights, ref_ids = router(hidden)
    weights, ids = route(logits, 2, norm_topk_prob)
    torch.testing.assert_close(ids, ref_ids)
    torch.testing.assert_close(weights, ref_weights)


def test_route_gradient_reaches_logits():
    logits = torch.randn(6, 8, requires_grad=True)
    weights, _ = route(logits, 2, renormalize=False)
    weights.sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
