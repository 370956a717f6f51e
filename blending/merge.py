"""Attention with log-sum-exp, and APE's merge of a context part with the rest.

APE (parallel encoding): query tokens attend to the contexts C and to the rest O (prefix,
query, generated tokens) separately; the two outputs are merged through their log-sum-exps
with a temperature T on C's logits and a scale S on its weight. T = S = 1 is exact attention
over the concatenation.
"""

import torch


def attention_lse(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention output and log-sum-exp of the scaled scores.

    q: [H, Tq, d]; k, v: [H, Tk, d] (kv heads already repeated to H); mask: [Tq, Tk] bool.
    Returns o: [H, Tq, d], lse: [H, Tq] (fp32). A row with no visible key gets o = 0, lse = -inf.
    """
    scores = torch.matmul(q.to(torch.float32), k.to(torch.float32).transpose(-1, -2)) * scale  # [H, Tq, Tk]
    if mask is not None:
        scores = scores.masked_fill(~mask[None], float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)  # [H, Tq]
    probs = torch.exp(scores - lse[..., None].clamp_min(torch.finfo(torch.float32).min))
    probs = torch.nan_to_num(probs, nan=0.0)
    return torch.matmul(probs, v.to(torch.float32)).to(q.dtype), lse


def ape_merge(
    o_c: torch.Tensor, lse_c: torch.Tensor, o_o: torch.Tensor, lse_o: torch.Tensor, scale: float
) -> torch.Tensor:
    """Merge the context part (computed with temperature T) and the rest.

    o_c, o_o: [H, Tq, d]; lse_c, lse_o: [H, Tq]. `lse_c` must come from scores divided by T;
    `scale` is S*T, so S = T = 1 gives exact attention over the union of keys.
    Returns [H, Tq, d].
    """
    weights = torch.softmax(torch.stack((scale * lse_c, lse_o)), dim=0)  # [2, H, Tq]
    weights = torch.nan_to_num(weights, nan=0.0)
    return (weights[0][..., None] * o_c.to(torch.float32) + weights[1][..., None] * o_o.to(torch.float32)).to(
        o_c.dtype
    )
