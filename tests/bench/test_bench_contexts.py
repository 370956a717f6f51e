"""Chunk building for the TTFT sweep: pure, on a character-level fake tokenizer."""

import pytest

from chunkcache.bench.contexts import build_chunks, build_context, passage_text
from chunkcache.errors import InvalidRequestError
from chunkcache.evaluation import QAExample


def encode(text: str) -> list[int]:
    return [ord(c) for c in text]


def decode(ids: list[int]) -> str:
    return "".join(map(chr, ids))


def example(i: int, n_passages: int = 2, length: int = 30) -> QAExample:
    passages = tuple({"title": f"T{i}{j}", "text": chr(ord("a") + j) * length} for j in range(n_passages))
    return QAExample(str(i), f"question {i}?", ("x",), passages)


def test_passage_text_puts_the_title_on_its_own_line():
    assert passage_text({"title": "T", "text": "body"}) == "T\nbody"
    assert passage_text({"title": "", "text": "body"}) == "body"


def test_chunks_are_cut_from_the_token_stream_in_order():
    examples = [example(0), example(1)]
    chunks = build_chunks(examples, encode, decode, count=3, tokens=20)
    assert len(chunks) == 3
    stream = "".join(passage_text(p) + "\n\n" for ex in examples for p in ex.passages)
    assert chunks[0] == stream[:20].strip()
    assert chunks[1] == stream[20:40].strip()


def test_chunks_run_on_into_the_following_examples():
    examples = [example(0, n_passages=1, length=10), example(1, n_passages=1, length=10), example(2, n_passages=1, length=10)]
    chunks = build_chunks(examples, encode, decode, count=2, tokens=20)  # 2 x 20 > one example's 15 ids
    assert "T1" in "".join(chunks) and "T2" in chunks[1]


def test_too_little_text_names_the_numbers():
    with pytest.raises(InvalidRequestError, match=r"needs 50 \(5000 tokens\)"):
        build_chunks([example(0)], encode, decode, count=50, tokens=100)


def test_bad_counts_are_refused():
    with pytest.raises(InvalidRequestError):
        build_chunks([example(0)], encode, decode, count=0, tokens=10)


def test_context_takes_the_first_question_and_primes_with_another():
    ctx = build_context([example(0), example(1)], encode, decode, count=2, tokens=10)
    assert ctx.question == "question 0?"
    assert ctx.prime_question == "question 1?"
    assert len(ctx.chunks) == 2
    alone = build_context([example(0)], encode, decode, count=1, tokens=10)
    assert alone.prime_question != alone.question


def test_real_tokenizer_chunks_are_about_the_requested_size(default_model_dir):
    """Re-encoded inside the prompt's passage template, a chunk keeps its size within a few ids."""
    from transformers import AutoTokenizer

    from chunkcache.evaluation import load_examples
    from chunkcache.prompt import Passage, PromptBuilder, PromptConfig
    from chunkcache.cli import DEMO_QA

    tok = AutoTokenizer.from_pretrained(default_model_dir)
    builder = PromptBuilder(tok, PromptConfig())
    chunks = build_chunks(load_examples(DEMO_QA), lambda s: tok(s, add_special_tokens=False)["input_ids"], tok.decode, count=4, tokens=128)
    lengths = [len(builder.passage_ids(Passage(c))) for c in chunks]
    assert all(abs(n - 128) <= 6 for n in lengths), lengths
