"""Streaming detokenization: the pieces join to the full decode, for the real tokenizer."""

import pytest

from chunkcache.detokenize import IncrementalDetokenizer

pytestmark = pytest.mark.slow  # SmolLM2's own tokenizer (its byte pieces and specials are the point)

TEXTS = [
    "The Eiffel Tower is in Paris; it was finished in 1889.",
    "Zürich, Kraków and São Paulo — naïve café façade, 東京タワー and 😀🚀 emoji.",
    "  leading spaces,\nnew lines\n\n\tand tabs   trailing  ",
    "ß∑∂ƒ©˙∆˚¬…æ «quotes» 한국어 العربية",
]


@pytest.fixture(scope="module")
def tokenizer(default_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(default_model_dir)


@pytest.mark.parametrize("text", TEXTS)
def test_pieces_join_to_the_full_decode(tokenizer, text):
    ids = tokenizer.encode(text, add_special_tokens=False)
    detok = IncrementalDetokenizer(tokenizer)
    pieces = [detok.push(t) for t in ids]
    assert "".join(pieces) == tokenizer.decode(ids, skip_special_tokens=True)
    # No piece ever carries a half-decoded multi-byte character.
    assert not any("\ufffd" in p for p in pieces)


def test_incomplete_character_is_held_back(tokenizer):
    ids = tokenizer.encode("😀", add_special_tokens=False)
    assert len(ids) > 1, "the emoji should span several byte-level tokens"
    detok = IncrementalDetokenizer(tokenizer)
    assert [detok.push(t) for t in ids[:-1]] == [""] * (len(ids) - 1)
    assert detok.push(ids[-1]) == "😀"


def test_special_tokens_are_skipped(tokenizer):
    ids = tokenizer.encode("Hello world", add_special_tokens=False) + [tokenizer.eos_token_id]
    detok = IncrementalDetokenizer(tokenizer)
    assert "".join(detok.push(t) for t in ids) == "Hello world"


def test_each_step_decodes_a_short_window(tokenizer):
    """Work per step stays bounded: no decode call sees more than a few tokens."""
    ids = tokenizer.encode(TEXTS[0] * 20, add_special_tokens=False)
    seen = []

    class Counting:
        def decode(self, window, skip_special_tokens=True):
            seen.append(len(window))
            return tokenizer.decode(window, skip_special_tokens=skip_special_tokens)

    detok = IncrementalDetokenizer(Counting())
    for t in ids:
        detok.push(t)
    assert len(ids) > 200 and max(seen) <= 8
