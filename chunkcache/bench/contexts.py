"""Bench contexts: the dataset's passages re-cut into chunks of about `tokens` tokens.

The TTFT sweep needs n chunks of a fixed size for n up to 20, more text than one example
holds (10 passages, about 1,100 tokens). So the passages of an example, then those of the
following examples, are read as one token stream and cut into windows of exactly `tokens`
ids, each decoded back to text. Re-encoding a window inside the prompt's passage template
gives `tokens` +- a few ids; the exact counts are recorded beside every result.
"""

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from chunkcache.errors import InvalidRequestError


@dataclass(frozen=True)
class BenchContext:
    """One prompt of the TTFT sweep: a question over `chunks` (texts, in prompt order).

    prime_question: another question over the same chunks, used to fill a prefix cache
    (llama.cpp) before the timed request, so that only the question differs.
    """

    question: str
    chunks: tuple[str, ...]
    prime_question: str


def passage_text(passage: dict) -> str:
    title = passage.get("title") or ""
    return f"{title}\n{passage['text']}" if title else passage["text"]


def token_stream(examples: Sequence, encode: Callable[[str], list[int]]) -> Iterator[int]:
    """Token ids of every passage of every example, in order, passages joined by a blank line."""
    for ex in examples:
        for p in ex.passages:
            yield from encode(passage_text(p) + "\n\n")


def build_chunks(examples: Sequence, encode: Callable[[str], list[int]], decode: Callable[[list[int]], str],
                 count: int, tokens: int = 256) -> list[str]:
    """`count` chunk texts of `tokens` ids each, cut from the passages of `examples` in order.

    Raises InvalidRequestError when the examples hold fewer than count * tokens ids.
    """
    if count < 1 or tokens < 1:
        raise InvalidRequestError(f"build_chunks needs count >= 1 and tokens >= 1, got count={count}, tokens={tokens}")
    chunks: list[str] = []
    window: list[int] = []
    for token in token_stream(examples, encode):
        window.append(token)
        if len(window) == tokens:
            text = decode(window).strip()
            if text:  # a window of whitespace only cannot be a passage
                chunks.append(text)
            window = []
            if len(chunks) == count:
                return chunks
    raise InvalidRequestError(
        f"the data holds {len(chunks)} chunks of {tokens} tokens but the bench needs {count} "
        f"({count * tokens} tokens); use a larger data file or smaller --sizes / --chunk-tokens"
    )


def build_context(examples: Sequence, encode: Callable[[str], list[int]], decode: Callable[[list[int]], str],
                  count: int, tokens: int = 256) -> BenchContext:
    """The first example's question over `count` chunks cut from the examples' passages."""
    if not examples:
        raise InvalidRequestError("build_context needs at least one example")
    chunks = build_chunks(examples, encode, decode, count, tokens)
    prime = examples[1].question if len(examples) > 1 else "Summarize the passages."
    if prime == examples[0].question:
        prime = "Summarize the passages."
    return BenchContext(examples[0].question, tuple(chunks), prime)
