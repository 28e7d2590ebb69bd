"""The packaged all-MiniLM-L6-v2 through `EmbeddingModel` equals sentence-transformers' output."""

from __future__ import annotations

import numpy as np
import pytest

from moeplane.modeling.embeddings import EmbeddingModel, default_model_path

TEXTS = [
    "How do I reset my password?",
    "Returns are accepted within 30 days of delivery.",
    "a",
    "Shipping to Canada takes 5-7 business days and costs $12; express is available. " * 20,
    "",
    "Can I talk to a human?",
]


@pytest.fixture(scope="module")
def model() -> EmbeddingModel:
    return EmbeddingModel()


def test_matches_sentence_transformers(model: EmbeddingModel) -> None:
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(default_model_path()), device="cpu")
    expected = reference.encode(TEXTS, batch_size=4, convert_to_numpy=True)
    got = model.encode(TEXTS, batch_size=3)
    assert got.shape == (len(TEXTS), 384) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=2e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_batching_does_not_change_results(model: EmbeddingModel) -> None:
    one_by_one = np.stack([model.encode([t])[0] for t in TEXTS])
    np.testing.assert_allclose(model.encode(TEXTS, batch_size=64), one_by_one, atol=1e-5)
    assert model.encode([]).shape == (0, 384)
    assert model.dim == 384


def test_similar_sentences_are_closer(model: EmbeddingModel) -> None:
    a, b, c = model.encode(
        ["How do I reset my password?", "I forgot my password", "Ship to Canada"]
    )
    assert a @ b > a @ c + 0.2


def test_token_counts_include_special_tokens(model: EmbeddingModel) -> None:
    assert model.count_tokens(["hello world", ""]) == [4, 2]
    assert model.count_tokens(["word " * 1000]) == [model.max_seq_length]
