"""Stop sequences: an answer's text cut at the first occurrence of any of them (OpenAI's `stop`).

Plain Python, no tokenizer: the text arrives as streamed pieces, and a stop sequence may span
pieces (and tokens). Streaming never releases text that a stop sequence could still remove: the
longest tail of the text that is the start of some stop sequence is held back until the next
piece decides it.
"""

from collections.abc import Sequence

from chunkcache.errors import InvalidRequestError

MAX_STOPS = 4  # OpenAI's limit
MAX_STOP_CHARS = 200


def stop_sequences(stop: str | Sequence[str] | None) -> tuple[str, ...]:
    """`stop` as given by a caller (None, one string, or a list of up to 4) as a tuple.

    Raises InvalidRequestError naming the rule a value broke.
    """
    if stop is None:
        return ()
    stops = [stop] if isinstance(stop, str) else stop
    if isinstance(stops, (bytes, bytearray)) or not isinstance(stops, Sequence):
        raise InvalidRequestError(f"stop must be a string or a list of up to {MAX_STOPS} strings, got {type(stop).__name__}")
    if len(stops) > MAX_STOPS:
        raise InvalidRequestError(f"stop takes at most {MAX_STOPS} sequences, got {len(stops)}")
    for s in stops:
        if not isinstance(s, str) or not s:
            raise InvalidRequestError(f"every stop sequence must be a non-empty string, got {s!r}")
        if len(s) > MAX_STOP_CHARS:
            raise InvalidRequestError(f"a stop sequence has at most {MAX_STOP_CHARS} characters, got {len(s)}")
    return tuple(dict.fromkeys(stops))


class StopText:
    """The text of one answer, fed piece by piece, cut before the first stop sequence.

    `feed(piece)` returns the text that may be released now; once a stop sequence is seen,
    `stopped` is True and nothing more is released. `flush()` releases what was held back when
    the answer ends for another reason. `text` is the answer: everything before the stop.
    """

    def __init__(self, stops: tuple[str, ...]):
        self.stops = stops
        self.stopped = False
        self._text = ""
        self._sent = 0  # characters of _text released so far

    @property
    def text(self) -> str:
        return self._text

    def feed(self, piece: str) -> str:
        if self.stopped or not piece:
            return ""
        self._text += piece
        # A stop can only start in the held-back tail: released text ends with no stop's start.
        found = [i for i in (self._text.find(s, self._sent) for s in self.stops) if i >= 0]
        if found:
            self.stopped = True
            self._text = self._text[: min(found)]
            return self._release(len(self._text))
        return self._release(len(self._text) - self._held())

    def flush(self) -> str:
        """The held-back tail, at the end of an answer that no stop sequence ended."""
        return "" if self.stopped else self._release(len(self._text))

    def _held(self) -> int:
        """Length of the longest tail of the unreleased text that begins some stop sequence."""
        tail = self._text[self._sent:]
        for k in range(min(len(tail), max(len(s) for s in self.stops) - 1), 0, -1):
            if any(s.startswith(tail[-k:]) for s in self.stops):
                return k
        return 0

    def _release(self, end: int) -> str:
        out, self._sent = self._text[self._sent:end], max(self._sent, end)
        return out
