"""Tiny stand-ins for the generator tokenizer and the embedder, so most tests need no model."""

from __future__ import annotations

import re
import zlib

import numpy as np

# GPT-2 like: a leading space sticks to the next word, words are cut into pieces of at most
# four characters, punctuation and whitespace runs are tokens of their own.
_TOKEN = re.compile(r" ?\w{1,4}| ?[^\w\s]|\s+")


class RegexTokenizer:
    """Hugging Face style ``__call__`` returning ``input_ids`` and ``offset_mapping``."""

    def __call__(self, text: str, add_special_tokens: bool = True,
                 return_offsets_mapping: bool = False, **_: object) -> dict[str, list]:
        spans = [m.span() for m in _TOKEN.finditer(text)]
        ids = [zlib.crc32(text[a:b].encode()) % 50_000 for a, b in spans]
        if add_special_tokens:
            ids = [1] + ids
            spans = [(0, 0)] + spans
        out: dict[str, list] = {"input_ids": ids}
        if return_offsets_mapping:
            out["offset_mapping"] = spans
        return out


class HashEmbedder:
    """Bag-of-words vectors by feature hashing: same words -> similar vectors. Records inputs."""

    def __init__(self, dim: int = 64):
        self.dim = dim
        self.fingerprint = f"hash-embedder/{dim}d"
        self.seen: list[str] = []

    def encode(self, texts: list[str], progress: bool = False) -> np.ndarray:
        self.seen.extend(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                h = zlib.crc32(word.encode())
                out[row, h % self.dim] += 1.0 if (h >> 16) & 1 else -1.0
            norm = np.linalg.norm(out[row])
            if norm == 0:
                out[row, 0], norm = 1.0, 1.0
            out[row] /= norm
        return out
