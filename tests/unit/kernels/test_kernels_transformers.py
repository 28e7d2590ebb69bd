"""experts_implementation="moeplane" in a tiny Qwen3-MoE gives eager's logits and gradients."""

import pytest
import torch
from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM
from transformers.integrations.moe import ALL_EXPERTS_FUNCTIONS, ExpertsInterface

import moeplane.kernels
from moeplane.kernels import transformers_integration
from tests.unit.kernels.kernels_reference import ref_experts


def _tiny_config() -> Qwen3MoeConfig:
    return Qwen3MoeConfig(
        vocab_size=512,
        hidden_size=64,
        intermediate_size=128,
        moe_intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        num_experts=8,
        num_experts_per_tok=2,
        norm_topk_prob=True,
        max_position_embeddings=128,
    )


def _model(implementation: str) -> Qwen3MoeForCausalLM:
    torch.manual_seed(0)
    model = Qwen3MoeForCausalLM._from_config(
        _tiny_config(), experts_implementation=implementation, attn_implementation="eager"
    )
    return model.float()


def test_import_registers_and_register_is_idempotent():
    assert "moeplane" in ALL_EXPERTS_FUNCTIONS
    before = dict(ExpertsInterface._global_mapping)
    moeplane.kernels.register()
    moeplane.kernels.register()
    assert ExpertsInterface._global_mapping == before
    assert ALL_EXPERTS_FUNCTIONS["moeplane"] is transformers_integration.moeplane_experts_forward


def test_logits_and_gradients_match_eager():
    eager, ours = _model("eager"), _model("moeplane")
    ours.load_state_dict(eager.state_dict())
    assert ours.config._experts_implementation == "moeplane"
    input_ids = torch.randint(0, 512, (2, 24), generator=torch.Generator().manual_seed(0))
    out_eager = eager(input_ids=input_ids, labels=input_ids)
    out_ours = ours(input_ids=input_ids, labels=input_ids)
    torch.testing.assert_close(out_ours.logits, out_eager.logits, rtol=1e-4, atol=1e-4)
    out_eager.loss.backward()
    out_ours.loss.backward()
    grads_eager = dict(eager.named_parameters())
    checked = 0
    for name, param in ours.named_parameters():
        ref = grads_eager[name].grad
        if ref is None:
            assert param.grad is None, name
            continue
        torch.testing.assert_close(param.grad, ref, rtol=1e-4, atol=1e-5, msg=name)
        checked += "experts" in name or "gate" in name
    assert checked >= 6  # gate_up_proj, down_proj and router of both layers


def test_unsupported_layout_raises():
    model = _model("moeplane")
    model.model.layers[0].mlp.experts.has_bias = True
    with pytest.raises(transformers_integration.UnsupportedExpertsLayout):
        model(input_ids=torch.zeros(1, 4, dtype=torch.long))


def test_layout_is_checked_on_a_modules_first_call_and_weights_may_be_buffers():
    forward = transformers_integration.moeplane_experts_forward
    first, second = (layer.mlp.experts for layer in _model("moeplane").model.layers)
    hidden = torch.randn(5, 64, generator=torch.Generator().manual_seed(1))
    ids = torch.tensor([[0, 3], [1, 2], [7, 0], [3, 4], [5, 6]])
    weights = torch.full((5, 2), 0.5)
    with torch.no_grad():
        want = forward(first, hidden, ids, weights)
        reference = ref_experts(hidden, first.gate_up_proj, first.down_proj, weights, ids)
        torch.testing.assert_close(want, reference, rtol=1e-5, atol=1e-5)
        assert first.__dict__[transformers_integration._CHECKED] is True
        # a module that fails the check is checked again on every call
        second.has_bias = True
        for _ in range(2):
            with pytest.raises(transformers_integration.UnsupportedExpertsLayout):
                forward(second, hidden, ids, weights)
        second.has_bias = False
        assert forward(second, hidden, ids, weights).shape == (5, 64)
        # weights held as buffers, not parameters
        gate_up, down = first.gate_up_proj.detach().clone(), first.down_proj.detach().clone()
        del first.gate_up_proj, first.down_proj
        first.register_buffer("gate_up_proj", gate_up)
        first.register_buffer("down_proj", down)
        assert torch.equal(forward(first, hidden, ids, weights), want)
