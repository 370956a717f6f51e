"""Next-token choice: greedy, or temperature with nucleus (top-p) sampling."""

from dataclasses import dataclass

import torch

from chunkcache.errors import InvalidRequestError


@dataclass(frozen=True)
class SamplingParams:
    """temperature 0 means greedy; top_p in (0, 1]; seed makes sampling reproducible.
    ignore_eos: go on past an end-of-sequence token up to max_new_tokens (benchmarks time
    answers of one length; vLLM's flag of the same name)."""

    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    ignore_eos: bool = False

    def __post_init__(self):
        if not 0.0 <= self.temperature <= 5.0:
            raise InvalidRequestError(f"temperature must be in [0, 5], got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise InvalidRequestError(f"top_p must be in (0, 1], got {self.top_p}")


class Sampler:
    def __init__(self, params: SamplingParams):
        self.params = params
        self.rng = torch.Generator()
        if params.seed is not None:
            self.rng.manual_seed(params.seed)
        else:
            self.rng.seed()

    def __call__(self, logits: torch.Tensor) -> int:
        """logits: [V] float32 -> token id."""
        p = self.params
        if p.temperature == 0.0:
            return int(logits.argmax())
        # float64, shifted so the best logit is 0: a temperature as small as 1e-300 (or a top_p
        # of 1e-46, below float32's smallest subnormal) must not underflow to 0 and turn the
        # division into inf/nan. The best token always keeps probability > 0.
        scaled = (logits.double() - logits.max().double()) / p.temperature  # [V], max 0
        probs = torch.softmax(scaled, dim=-1)
        if p.top_p < 1.0:
            sorted_probs, order = probs.sort(descending=True)
            keep = sorted_probs.cumsum(0) - sorted_probs < p.top_p
            keep[0] = True  # the top token, whatever rounding says
            probs = torch.zeros_like(probs).scatter(0, order, sorted_probs * keep)
        return int(torch.multinomial(probs / probs.sum(), 1, generator=self.rng))
