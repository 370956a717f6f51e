"""Answer scores: SQuAD-style normalisation, token F1 and exact match, first-token KL (not the service metrics, see api/metrics.py)."""

import re
import string
from collections import Counter

import torch

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower-case, drop punctuation and articles, collapse whitespace (SQuAD v1.1)."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def token_f1(prediction: str, reference: str) -> float:
    pred, ref = normalize_answer(prediction).split(), normalize_answer(reference).split()
    if not pred and not ref:
        return 1.0
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def exact_match(prediction: str, reference: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(reference))


def best_over(metric, prediction: str, references: list[str]) -> float:
    """The best score against any of the gold answers (0 when there are none)."""
    return max((metric(prediction, r) for r in references), default=0.0)


def kl_divergence(reference_logprobs: torch.Tensor, logprobs: torch.Tensor) -> float:
    """KL(reference || other) in nats over one vocabulary distribution. Both: [V] log-probabilities."""
    ref = reference_logprobs.to(torch.float64)
    return float((ref.exp() * (ref - logprobs.to(torch.float64))).sum().clamp_min(0.0))
