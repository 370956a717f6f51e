"""Chunker properties over generated texts, with the fake and the real generator tokenizer."""

from __future__ import annotations

import random

import pytest

from chunkcache.errors import ConfigError, InvalidRequestError
from chunkcache.retrieval.chunker import Chunk, ChunkerConfig, chunk_document, count_tokens

WORDS = (
    "the cache keeps every chunk once and reuses it later model token layer rope blend "
    "naïve Zürich façade 東京 tokyo 2024 3.14 e.g. don't state-of-the-art 😀 👩‍🔬 α-β"
).split()


def random_text(seed: int) -> str:
    """Paragraphs of sentences, with over-long words, odd whitespace and unicode."""
    rng = random.Random(seed)
    paragraphs = []
    for _ in range(rng.randint(1, 6)):
        sentences = []
        for _ in range(rng.randint(1, 8)):
            words = []
            for _ in range(rng.randint(1, 40)):
                if rng.random() < 0.03:
                    words.append("".join(rng.choice("abcdefghxyz") for _ in range(rng.randint(20, 120))))
                else:
                    words.append(rng.choice(WORDS))
            sentences.append(" ".join(words) + rng.choice([".", "!", "?", "", "。", '."']))
        paragraphs.append(rng.choice([" ", "\n", "  "]).join(sentences))
    body = "".join(p + rng.choice(["\n\n", "\n \n", "\n\n\n\t"]) for p in paragraphs)
    return rng.choice(["", "  ", "\n"]) + body


CONFIGS = [ChunkerConfig(4, 0), ChunkerConfig(16, 0), ChunkerConfig(16, 6),
           ChunkerConfig(64, 0), ChunkerConfig(64, 20), ChunkerConfig(256, 0)]


def check_invariants(text: str, chunks: list[Chunk], tokenizer, config: ChunkerConfig) -> None:
    assert chunks, "a non-empty text gives at least one chunk"
    covered = bytearray(len(text))
    for i, c in enumerate(chunks):
        assert c.ordinal == i
        assert c.text == text[c.char_start:c.char_end]
        assert c.text and c.text == c.text.strip()
        assert c.n_tokens == count_tokens(tokenizer, c.text)
        assert c.n_tokens <= config.max_tokens, (c.n_tokens, config)
        covered[c.char_start:c.char_end] = b"\x01" * (c.char_end - c.char_start)
    uncovered = [i for i, ch in enumerate(text) if not ch.isspace() and not covered[i]]
    assert not uncovered, f"non-whitespace characters not in any chunk: {uncovered[:5]}"
    for a, b in zip(chunks, chunks[1:]):
        assert a.char_start < b.char_start and a.char_end < b.char_end
        if config.overlap_tokens == 0:
            assert a.char_end <= b.char_start, "chunks overlap without overlap_tokens"


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"{c.max_tokens}-{c.overlap_tokens}")
def test_chunk_invariants_on_generated_text(tokenizer, seed, config):
    text = random_text(seed)
    chunks = chunk_document("doc", text, tokenizer, config)
    check_invariants(text, chunks, tokenizer, config)
    assert chunk_document("doc", text, tokenizer, config) == chunks  # deterministic


def test_paragraphs_that_fit_are_kept_whole(tokenizer):
    paras = ["Alpha beta gamma. Delta epsilon.", "Zeta eta theta. Iota kappa.", "Lambda mu nu."]
    text = "\n\n".join(paras)
    limit = max(count_tokens(tokenizer, p) for p in paras) + 2  # one paragraph, never two
    chunks = chunk_document("d", text, tokenizer, ChunkerConfig(limit))
    assert [c.text for c in chunks] == paras
    whole = chunk_document("d", text, tokenizer, ChunkerConfig(256))
    assert [c.text for c in whole] == [text]


def test_long_paragraph_is_cut_at_sentences(tokenizer):
    sentences = [f"Sentence number {w} talks about topic {w}." for w in "abcdefghij"]
    text = " ".join(sentences)
    chunks = chunk_document("d", text, tokenizer, ChunkerConfig(30))
    assert len(chunks) > 1
    starts = {text.index(s) for s in sentences}
    ends = {text.index(s) + len(s) for s in sentences}
    assert all(c.char_start in starts and c.char_end in ends for c in chunks)


def test_overlap_repeats_whole_trailing_sentences(tokenizer):
    sentences = [f"Fact {i} is short." for i in range(30)]
    text = " ".join(sentences)
    config = ChunkerConfig(max_tokens=24, overlap_tokens=10)
    chunks = chunk_document("d", text, tokenizer, config)
    check_invariants(text, chunks, tokenizer, config)
    starts = {text.index(s) for s in sentences}
    overlaps = 0
    for a, b in zip(chunks, chunks[1:]):
        assert b.char_start in starts  # a chunk starts at a whole sentence
        if b.char_start < a.char_end:
            overlaps += 1
            assert count_tokens(tokenizer, text[b.char_start:a.char_end]) <= config.overlap_tokens
    assert overlaps == len(chunks) - 1


def test_overlong_word_is_cut_at_token_boundaries(tokenizer):
    text = "prefix " + "abcdefghijklmnopqrstuvwxyz" * 40 + " suffix"
    config = ChunkerConfig(max_tokens=8)
    chunks = chunk_document("d", text, tokenizer, config)
    check_invariants(text, chunks, tokenizer, config)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    boundaries = {a for a, _ in enc["offset_mapping"]} | {b for _, b in enc["offset_mapping"]}
    for a, b in zip(chunks, chunks[1:]):
        assert a.char_end in boundaries and b.char_start in boundaries


def test_character_needing_more_tokens_than_the_limit_is_an_error(real_tokenizer):
    emoji = "👩‍🔬"
    assert count_tokens(real_tokenizer, emoji[0]) > 1  # byte-level BPE spreads it over tokens
    with pytest.raises(InvalidRequestError, match="raise max_tokens"):
        chunk_document("d", emoji[0] * 3, real_tokenizer, ChunkerConfig(max_tokens=1))


@pytest.mark.parametrize("text", ["", "   ", "\n\n\t"])
def test_empty_text_is_rejected(fake_tokenizer, text):
    with pytest.raises(InvalidRequestError, match="'doc-7' has no text"):
        chunk_document("doc-7", text, fake_tokenizer, ChunkerConfig())


def test_non_string_text_is_rejected(fake_tokenizer):
    with pytest.raises(InvalidRequestError, match="must be a str, got bytes"):
        chunk_document("d", b"bytes", fake_tokenizer, ChunkerConfig())


@pytest.mark.parametrize(
    "kwargs, message",
    [({"max_tokens": 0}, "max_tokens must be an int >= 1, got 0"),
     ({"max_tokens": True}, "max_tokens"),
     ({"overlap_tokens": -1}, "overlap_tokens must be an int >= 0, got -1"),
     ({"max_tokens": 10, "overlap_tokens": 10}, r"overlap_tokens \(10\) must be smaller")],
)
def test_config_is_validated(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        ChunkerConfig(**kwargs)
