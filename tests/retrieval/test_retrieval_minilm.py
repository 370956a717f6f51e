"""The real default embedder (all-MiniLM-L6-v2) and a small hand-written corpus."""

from __future__ import annotations

import numpy as np
import pytest

from chunkcache.errors import ConfigError, InvalidRequestError, ModelLoadError
from chunkcache.retrieval import Corpus, CorpusConfig, Document, Embedder

PASSAGES = {
    "volcano": ("Volcanoes", "A volcano erupts when pressure from molten rock and dissolved gas "
                "builds up beneath the crust until the magma forces its way to the surface."),
    "bees": ("Honeybees", "Honeybees tell their hive mates where flowers are with a waggle dance; "
             "the angle of the dance gives the direction relative to the sun."),
    "bread": ("Sourdough", "Sourdough bread rises because wild yeast and lactic acid bacteria in "
              "the starter ferment the flour and release carbon dioxide."),
    "chess": ("Castling", "In chess, castling moves the king two squares towards a rook, which then "
              "jumps over the king; neither piece may have moved before."),
    "tides": ("Tides", "Ocean tides are caused mainly by the gravitational pull of the Moon, with "
              "a smaller contribution from the Sun."),
    "vaccine": ("Vaccines", "Vaccines train the immune system by exposing it to a harmless piece "
                "or weakened form of a pathogen, so memory cells respond faster later."),
    "bridge": ("Suspension bridges", "A suspension bridge hangs its deck from vertical cables "
               "attached to main cables slung between tall towers and anchored at both ends."),
    "coffee": ("Coffee", "Coffee beans are the roasted seeds of the Coffea plant; roasting "
               "creates the brown colour and much of the aroma through the Maillard reaction."),
}
QUESTIONS = {
    "What makes magma reach the surface?": "volcano",
    "How do bees communicate the location of food?": "bees",
    "Why does sourdough rise?": "bread",
    "Which pieces move in castling?": "chess",
    "What causes the tides in the sea?": "tides",
    "How does immunisation prepare the body against disease?": "vaccine",
    "What holds up the road of a suspension bridge?": "bridge",
    "Where does the smell of roasted coffee come from?": "coffee",
}


def test_embeddings_are_unit_float32_rows(minilm):
    vectors = minilm.encode(["a cat on a mat", "a feline resting on a rug", "interest rates rose"])
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32 and minilm.dim == 384
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.3
    assert minilm.encode([]).shape == (0, 384)
    assert minilm.fingerprint.startswith("sha256:") and minilm.fingerprint.endswith("/384d")


def test_embedder_errors(minilm, tmp_path):
    with pytest.raises(ModelLoadError, match="no sentence-transformers model at"):
        Embedder(str(tmp_path))
    with pytest.raises(ConfigError, match="batch_size must be an int >= 1, got 0"):
        Embedder(batch_size=0)
    with pytest.raises(InvalidRequestError, match=r"texts\[1\] must be a str, got NoneType"):
        minilm.encode(["fine", None])


@pytest.mark.parametrize("retrieval", ["dense", "hybrid"])
def test_each_question_finds_its_passage_first(tmp_path, real_tokenizer, minilm, retrieval):
    config = CorpusConfig(retrieval=retrieval)
    docs = [Document(id=k, title=t, text=x) for k, (t, x) in PASSAGES.items()]
    with Corpus(str(tmp_path), real_tokenizer, minilm, config) as corpus:
        corpus.add_documents(docs)
        results = {q: corpus.search(q, top_k=3) for q in QUESTIONS}
    for question, expected in QUESTIONS.items():
        assert results[question][0].doc_id == expected, (question, results[question][0].doc_id)
    with Corpus(str(tmp_path), real_tokenizer, minilm, config) as corpus:
        assert {q: corpus.search(q, top_k=3) for q in QUESTIONS} == results
