"""A small in-memory Okapi BM25 index over int ids, and reciprocal-rank fusion.

Lexical matching complements MiniLM where exact names, numbers and rare words decide
relevance. Terms are lower-cased, accent-folded ``\\w+`` runs minus a short English stopword
list. The index lives in memory and is rebuilt from the docstore when a corpus opens.
"""

from __future__ import annotations

import heapq
import math
import re
import unicodedata
from collections import Counter
from typing import Iterable

from chunkcache.errors import InvalidRequestError

_WORD = re.compile(r"\w+")
_STOPWORDS = frozenset(
    "a an and are as at be but by for from has have he her his in is it its of on or she "
    "that the their there this to was were which who with what when where whom why how did "
    "do does s".split()
)


def terms(text: str) -> list[str]:
    """Index terms of ``text``: folded words, stopwords and lone letters dropped."""
    folded = unicodedata.normalize("NFKD", text.lower())
    folded = "".join(c for c in folded if not unicodedata.combining(c))
    return [
        w for w in _WORD.findall(folded) if w not in _STOPWORDS and (len(w) > 1 or w.isdigit())
    ]


class BM25Index:
    """Okapi BM25 (``k1``, ``b``) with the non-negative idf ``log(1 + (N-df+.5)/(df+.5))``."""

    def __init__(self, k1: float = 1.2, b: float = 0.75):
        self.k1, self.b = k1, b
        self._postings: dict[str, dict[int, int]] = {}  # term -> {id: term frequency}
        self._lengths: dict[int, int] = {}  # id -> number of terms
        self._terms: dict[int, tuple[str, ...]] = {}  # id -> its distinct terms, for removal
        self._total = 0

    def __len__(self) -> int:
        return len(self._lengths)

    def add(self, item_id: int, text: str) -> None:
        if item_id in self._lengths:
            raise InvalidRequestError(f"id {item_id} is already in the BM25 index")
        counts = Counter(terms(text))
        for term, tf in counts.items():
            self._postings.setdefault(term, {})[item_id] = tf
        n = sum(counts.values())
        self._lengths[item_id] = n
        self._terms[item_id] = tuple(counts)
        self._total += n

    def add_many(self, items: Iterable[tuple[int, str]]) -> None:
        for item_id, text in items:
            self.add(item_id, text)

    def remove(self, item_id: int) -> None:
        """Forget ``item_id``; unknown ids are ignored (the vector index is the authority)."""
        if item_id not in self._lengths:
            return
        for term in self._terms.pop(item_id):
            postings = self._postings[term]
            del postings[item_id]
            if not postings:
                del self._postings[term]
        self._total -= self._lengths.pop(item_id)

    def search(self, query: str, k: int) -> list[tuple[int, float]]:
        """Top-``k`` ``(id, score)``, best first; ties broken by smaller id."""
        n = len(self._lengths)
        if n == 0:
            return []
        avg = self._total / n or 1.0
        scores: dict[int, float] = {}
        for term in set(terms(query)):
            postings = self._postings.get(term)
            if not postings:
                continue
            idf = math.log(1.0 + (n - len(postings) + 0.5) / (len(postings) + 0.5))
            for item_id, tf in postings.items():
                norm = self.k1 * (1.0 - self.b + self.b * self._lengths[item_id] / avg)
                scores[item_id] = scores.get(item_id, 0.0) + idf * tf * (self.k1 + 1) / (tf + norm)
        return heapq.nsmallest(k, scores.items(), key=lambda kv: (-kv[1], kv[0]))


def reciprocal_rank_fusion(rankings: list[list[int]], k: int = 60) -> list[tuple[int, float]]:
    """Fuse best-first id lists: ``score(id) = sum 1 / (k + rank)``, rank from 1.

    Cormack et al. 2009; ``k=60`` is their value. Ties are broken by smaller id.
    """
    fused: dict[int, float] = {}
    for ranking in rankings:
        for rank, item_id in enumerate(ranking, start=1):
            fused[item_id] = fused.get(item_id, 0.0) + 1.0 / (k + rank)
    return sorted(fused.items(), key=lambda kv: (-kv[1], kv[0]))
