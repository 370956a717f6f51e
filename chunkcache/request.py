"""One tokenized request: what the prompt phase, the cache assembly and the decode stream read."""

from dataclasses import dataclass

from chunkcache.config import BlendConfig


@dataclass(frozen=True)
class Request:
    """mode: one of names.MODES (`prompt_phase.py` describes each). chunk_ids: one token list per
    passage, in prompt order; suffix_ids: the question (and any chat history) after them.

    blend: the request's levers, its recompute ratio included (the cache's `BlendConfig` unless
    the caller gave one): blend's selection, growth and repair, APE's temperature and scale.
    exact_chunks: leading chunks whose cached entries are chain entries (rotated, exact in this
    prompt); blend's selection, growth and repair cover the chunks after them only.
    """

    mode: str
    chunk_ids: tuple[tuple[int, ...], ...]
    suffix_ids: tuple[int, ...]
    max_new_tokens: int
    blend: BlendConfig
    exact_chunks: int = 0

    @property
    def lengths(self) -> list[int]:
        """Tokens per chunk, in prompt order."""
        return [len(c) for c in self.chunk_ids]

    @property
    def exact_tokens(self) -> int:
        """Context tokens of the exact leading run."""
        return sum(self.lengths[: self.exact_chunks])
