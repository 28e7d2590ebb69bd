"""Chat JSONL -> token ids and labels (loss only on assistant tokens), batches, DDP shards."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from moeplane.modeling import encode_chat

__all__ = ["Example", "collate", "epoch_batches", "load_examples"]

IGNORE = -100  # label value the loss skips


@dataclass(frozen=True)
class Example:
    input_ids: list[int]
    labels: list[int]

    @property
    def trained_tokens(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE)


def load_examples(path: str | Path, tokenizer, max_seq_len: int) -> list[Example]:
    """Tokenise every chat; labels are the ids on assistant tokens and IGNORE elsewhere."""
    examples = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if not line.strip():
                continue
            messages = json.loads(line)["messages"]
            ids, mask = encode_chat(tokenizer, messages)
            ids, mask = ids[:max_seq_len], mask[:max_seq_len]
            labels = [i if m else IGNORE for i, m in zip(ids, mask, strict=True)]
            if any(label != IGNORE for label in labels):
                examples.append(Example(ids, labels))
    if not examples:
        raise ValueError(f"{path}: no example has assistant tokens within max_seq_len")
    return examples


def collate(batch: list[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest example; padding is masked out of attention and loss."""
    width = max(len(e.input_ids) for e in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)  # (B, T)
    labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)  # (B, T)
    attention = torch.zeros((len(batch), width), dtype=torch.long)  # (B, T)
    for row, example in enumerate(batch):
        n = len(example.input_ids)
        input_ids[row, :n] = torch.tensor(example.input_ids)
        labels[row, :n] = torch.tensor(example.labels)
        attention[row, :n] = 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention}


def epoch_batches(
    n_examples: int, batch_size: int, *, epoch: int, seed: int, rank: int, world: int
) -> list[list[int]]:
    """This rank's batches for one epoch: one shuffle shared by all ranks (same seed), each rank
    taking an equal slice so every rank runs the same number of steps (DDP needs that)."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(n_examples, generator=generator).tolist()
    per_rank = max(1, n_examples // world)
    mine = [order[(rank * per_rank + i) % n_examples] for i in range(per_rank)]
    return [mine[i : i + batch_size] for i in range(0, len(mine), batch_size)]
