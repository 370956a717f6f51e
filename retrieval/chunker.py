"""Split one document into chunks that fit the generator's token budget.

Every chunk is a span of the original text (``text == original[char_start:char_end]``) with
no leading or trailing whitespace, so a chunk's KV cache can be computed from its text alone
and its position in the source is never lost. Token counts are those of the *generator*
tokenizer applied to the chunk text on its own (``add_special_tokens=False``): that is the
sequence whose KV cache gets precomputed, and in-context counts can differ from it by a
token or two at the edges, so every count here is measured, never summed.

The split is hierarchical: paragraphs (blank lines) that fit are kept whole; a paragraph that
does not fit is cut into sentences, a sentence that does not fit into lines, and a line that
does not fit into windows cut at token boundaries taken from the tokenizer's offsets (never
inside a token, preferably at whitespace). The pieces are then packed greedily, in order, up
to ``max_tokens``. With ``overlap_tokens > 0`` a chunk starts with the longest run of whole
trailing sentences of the previous chunk that fits in ``overlap_tokens`` (a fragment of an
over-long sentence counts as a sentence). The result depends only on the text, the tokenizer
and the config.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Protocol

from chunkcache.errors import ConfigError, InvalidRequestError

# A blank line (possibly holding spaces) separates paragraphs.
_PARAGRAPH_BREAK = re.compile(r"\n[^\S\n]*\n\s*")
# A sentence ends at terminal punctuation (plus up to two closing quotes/brackets) before
# whitespace, or at CJK terminal punctuation, which is not followed by a space. Separators
# match whitespace only, so no visible character falls between two sentences.
_CLOSERS = "[\"'”’)\\]]"
_SENTENCE_BREAK = re.compile(
    rf"(?:(?<=[.!?…])|(?<=[.!?…]{_CLOSERS})|(?<=[.!?…]{_CLOSERS}{_CLOSERS}))\s+"
    r"|(?<=[。！？])\s*"
)
_LINE_BREAK = re.compile(r"\s*\n\s*")

Span = tuple[int, int]


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class Tokenizer(Protocol):
    """What the chunker needs of a tokenizer: a Hugging Face style ``__call__``.

    ``tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)`` returns a
    mapping with ``input_ids`` (list of ints) and ``offset_mapping`` (list of
    ``(char_start, char_end)`` into ``text``).
    """

    def __call__(self, text: str, **kwargs: Any) -> Any: ...


@dataclass(frozen=True)
class ChunkerConfig:
    """How big chunks are, in generator tokens."""

    max_tokens: int = 256
    overlap_tokens: int = 0

    def __post_init__(self) -> None:
        if not _is_int(self.max_tokens) or self.max_tokens < 1:
            raise ConfigError(f"max_tokens must be an int >= 1, got {self.max_tokens!r}")
        if not _is_int(self.overlap_tokens) or self.overlap_tokens < 0:
            raise ConfigError(f"overlap_tokens must be an int >= 0, got {self.overlap_tokens!r}")
        if self.overlap_tokens >= self.max_tokens:
            raise ConfigError(
                f"overlap_tokens ({self.overlap_tokens}) must be smaller than "
                f"max_tokens ({self.max_tokens})"
            )


@dataclass(frozen=True)
class Chunk:
    """One chunk of a document; ``text == original[char_start:char_end]``."""

    doc_id: str
    ordinal: int
    text: str
    char_start: int
    char_end: int
    n_tokens: int


@dataclass(frozen=True)
class _Piece:
    """An indivisible packing unit and the sentence spans it holds (overlap candidates)."""

    start: int
    end: int
    n_tokens: int
    sentences: tuple[Span, ...]


def count_tokens(tokenizer: Tokenizer, text: str) -> int:
    """Number of generator tokens of ``text`` on its own, without special tokens."""
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def chunk_document(
    doc_id: str, text: str, tokenizer: Tokenizer, config: ChunkerConfig = ChunkerConfig()
) -> list[Chunk]:
    """Chunks of ``text`` in document order, each at most ``config.max_tokens`` tokens.

    Raises InvalidRequestError for non-string or whitespace-only text, and for a single
    character that alone needs more than ``max_tokens`` tokens.
    """
    if not isinstance(text, str):
        raise InvalidRequestError(
            f"document {doc_id!r}: text must be a str, got {type(text).__name__}"
        )
    if not text.strip():
        raise InvalidRequestError(f"document {doc_id!r} has no text (empty or whitespace only)")

    def count(start: int, end: int) -> int:
        return count_tokens(tokenizer, text[start:end])

    pieces = _pieces(doc_id, text, tokenizer, config.max_tokens, count)
    spans = _pack(pieces, config, count)
    return [
        Chunk(doc_id, ordinal, text[start:end], start, end, n_tokens)
        for ordinal, (start, end, n_tokens) in enumerate(spans)
    ]


def _pack(
    pieces: Iterator[_Piece], config: ChunkerConfig, count: Callable[[int, int], int]
) -> list[tuple[int, int, int]]:
    """Greedy packing of pieces into (start, end, n_tokens) spans, with sentence overlap."""
    out: list[tuple[int, int, int]] = []
    cur: _Piece | None = None
    for piece in pieces:
        if cur is None:
            cur = piece
            continue
        n = count(cur.start, piece.end)
        if n <= config.max_tokens:
            cur = _Piece(cur.start, piece.end, n, cur.sentences + piece.sentences)
            continue
        out.append((cur.start, cur.end, cur.n_tokens))
        cur = _with_overlap(cur, piece, config, count)
    if cur is not None:
        out.append((cur.start, cur.end, cur.n_tokens))
    return out


def _with_overlap(
    prev: _Piece, piece: _Piece, config: ChunkerConfig, count: Callable[[int, int], int]
) -> _Piece:
    """``piece`` preceded by the longest suffix of whole sentences of ``prev`` that fits."""
    best = piece
    for i in range(len(prev.sentences) - 1, -1, -1):
        start = prev.sentences[i][0]
        if config.overlap_tokens == 0 or count(start, prev.end) > config.overlap_tokens:
            break
        n = count(start, piece.end)
        if n > config.max_tokens:
            break
        best = _Piece(start, piece.end, n, prev.sentences[i:] + piece.sentences)
    return best


def _pieces(
    doc_id: str,
    text: str,
    tokenizer: Tokenizer,
    max_tokens: int,
    count: Callable[[int, int], int],
) -> Iterator[_Piece]:
    """Paragraphs that fit, else their sentences, else lines, else token windows."""
    for p in _split(text, 0, len(text), _PARAGRAPH_BREAK):
        sentences = tuple(_split(text, *p, _SENTENCE_BREAK))
        n = count(*p)
        if n <= max_tokens:
            yield _Piece(p[0], p[1], n, sentences)
            continue
        for s in sentences:
            n = count(*s)
            if n <= max_tokens:
                yield _Piece(s[0], s[1], n, (s,))
                continue
            for line in _split(text, *s, _LINE_BREAK):
                n = count(*line)
                if n <= max_tokens:
                    yield _Piece(line[0], line[1], n, (line,))
                    continue
                for w, n in _token_windows(doc_id, text, line, tokenizer, max_tokens, count):
                    yield _Piece(w[0], w[1], n, (w,))


def _split(text: str, start: int, end: int, pattern: re.Pattern[str]) -> Iterator[Span]:
    """Non-empty, whitespace-stripped spans of ``text[start:end]`` between ``pattern`` hits."""
    pos = start
    for m in pattern.finditer(text, start, end):
        span = _strip(text, pos, m.start())
        if span[0] < span[1]:
            yield span
        pos = m.end()
    span = _strip(text, pos, end)
    if span[0] < span[1]:
        yield span


def _strip(text: str, start: int, end: int) -> Span:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def _token_windows(
    doc_id: str,
    text: str,
    span: Span,
    tokenizer: Tokenizer,
    max_tokens: int,
    count: Callable[[int, int], int],
) -> Iterator[tuple[Span, int]]:
    """Cut ``span`` into windows of at most ``max_tokens`` tokens at token boundaries.

    A cut goes where a token starts and the previous one has ended (so never inside a token
    nor inside a character that byte-level BPE spreads over several tokens); among the cuts
    that fit, the last one at whitespace in the second half of the window is preferred, so
    words stay whole when they can.
    """
    start, end = span
    enc = tokenizer(text[start:end], add_special_tokens=False, return_offsets_mapping=True)
    offsets = [(int(a), int(b)) for a, b in enc["offset_mapping"]]
    # (token index, absolute char position) of every place a window may end.
    cuts = [
        (j, start + offsets[j][0])
        for j in range(1, len(offsets))
        if offsets[j][0] >= offsets[j - 1][1] and offsets[j][0] > 0
    ]
    cut_tokens = [j for j, _ in cuts]  # ascending, for bisect
    first_token, pos = 0, start
    while True:
        rest = _strip(text, pos, end)
        if rest[0] >= rest[1]:
            return
        if len(offsets) - first_token <= max_tokens:  # measure the tail only once it is short
            n_rest = count(*rest)
            if n_rest <= max_tokens:
                yield rest, n_rest
                return
        lo = bisect.bisect_right(cut_tokens, first_token)
        hi = bisect.bisect_right(cut_tokens, first_token + max_tokens)
        fitting = [c for c in cuts[lo:hi] if c[1] > pos]
        window = _best_window(text, pos, fitting, first_token, max_tokens, count)
        if window is None:
            raise InvalidRequestError(
                f"document {doc_id!r}: no token boundary within {max_tokens} tokens after "
                f"character {pos}; raise max_tokens (text there: {text[pos:pos + 20]!r})"
            )
        (w_span, n), (first_token, pos) = window
        if w_span[0] < w_span[1]:
            yield w_span, n


def _best_window(
    text: str,
    pos: int,
    fitting: list[tuple[int, int]],
    first_token: int,
    max_tokens: int,
    count: Callable[[int, int], int],
) -> tuple[tuple[Span, int], tuple[int, int]] | None:
    """The window ending at the preferred fitting cut whose measured length fits."""
    half = first_token + max_tokens // 2
    at_space = [
        c for c in fitting if c[0] >= half and (text[c[1]].isspace() or text[c[1] - 1].isspace())
    ]
    preferred = set(at_space)
    others = [c for c in fitting if c not in preferred]
    for j, cut in sorted(at_space, reverse=True) + sorted(others, reverse=True):
        w_span = _strip(text, pos, cut)
        n = count(*w_span)
        if n <= max_tokens:
            return (w_span, n), (j, cut)
    return None
