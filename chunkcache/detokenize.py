"""Streaming text from generated token ids without re-decoding the whole answer each step."""


class IncrementalDetokenizer:
    """Turns token ids, one at a time, into text pieces whose concatenation is the full decode.

    The prefix-offset / read-offset technique of vLLM and TGI: each step decodes only the
    tokens from `prefix_offset` on, twice (up to `read_offset`, and to the end), and emits the
    difference. Decoding a short window keeps a step O(window), and starting both decodes at
    the same token keeps tokenizer-specific spacing (SentencePiece's leading "▁") consistent.
    A piece ending in U+FFFD is an incomplete multi-byte character: held back until it completes.
    """

    def __init__(self, tokenizer, skip_special_tokens: bool = True):
        self._tok = tokenizer
        self._skip = skip_special_tokens
        self.ids: list[int] = []
        self._prefix_offset = 0
        self._read_offset = 0

    def _decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids, skip_special_tokens=self._skip)

    def push(self, token: int) -> str:
        """Add one token; returns the new text it completes ("" when it completes none yet)."""
        self.ids.append(int(token))
        window = self.ids[self._prefix_offset:]
        before = self._decode(self.ids[self._prefix_offset:self._read_offset])
        text = self._decode(window)
        if len(text) > len(before) and not text.endswith("\ufffd"):
            self._prefix_offset, self._read_offset = self._read_offset, len(self.ids)
            return text[len(before):]
        return ""
