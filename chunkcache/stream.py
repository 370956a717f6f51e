"""The decode stream of one request: from its first token to its end, alone or in a batch.

Each decode step is `Stream.rows()` (the rows this request adds to a forward), one forward of
those rows alone or batched with other requests' (`decode_step`: `Engine.forward_rows`), then
`Stream.advance(logits)`. Greedy tokens do not depend on the batch: every row attends its own
cache only. A stream ends on a stop token, at its length, when its consumer says the text is
complete (a stop sequence), or when `should_stop` says so (cancelled). A consumer whose
`on_token` raises has failed: `decode_step` returns that error for its caller to fail the request.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch

from chunkcache.engine import Engine, Rows
from chunkcache.kv import WorkingKV
from chunkcache.repair import Decoder
from chunkcache.request import Request
from chunkcache.sampling import Sampler


@dataclass(frozen=True)
class PromptTimings:
    """ttft_s: from the request's start to its first token; prefill_s: the prompt's forward
    (and blend); reposition_s: placing the chunks' KV."""

    ttft_s: float
    prefill_s: float
    reposition_s: float


@dataclass(frozen=True)
class Generated:
    token_ids: tuple[int, ...]
    first_logits: torch.Tensor  # [V] float32, on the CPU
    ttft_s: float
    prefill_s: float
    reposition_s: float
    decode_s: float
    recomputed: int
    finish_reason: str
    repaired: int = 0  # context tokens recomputed while decoding
    teacher_agreement: float | None = None
    replay_s: float = 0.0  # the teacher-forced replay after the answer (evaluation only; not answer time)
    # The request's working cache after the answer: what a full prefill computed is stored from
    # it as chain entries (`ChainStore.save`); the context slots are unchanged by plain decoding.
    kv: WorkingKV | None = field(default=None, repr=False, compare=False)


class Stream:
    """One request between its first token and its end: its decoder (and cache) and tokens so far."""

    def __init__(self, engine: Engine, req: Request, decoder: Decoder, sampler: Sampler, token: int,
                 first_logits: torch.Tensor, next_pos: int, recomputed: int, timings: PromptTimings,
                 on_token: Callable[[int], bool] | None, should_stop: Callable[[], bool] | None):
        self.engine, self.req, self.decoder, self.sampler = engine, req, decoder, sampler
        self.first_logits, self.first_pos = first_logits, next_pos
        self.position, self.recomputed, self.timings = next_pos, recomputed, timings
        self.on_token, self.should_stop = on_token, should_stop
        self.tokens: list[int] = []
        self.eos = set() if sampler.params.ignore_eos else set(engine.gen.spec.eos_token_ids)
        self.finish = "length"
        self.decode_s = 0.0
        self._emit(token)

    def _emit(self, token: int) -> None:
        self.tokens.append(token)
        if self.on_token is not None and self.on_token(token):
            self.finish = "stop"  # the consumer says the text is complete: a stop sequence matched
        if token in self.eos:
            self.finish = "stop"

    @property
    def finished(self) -> bool:
        """No more steps: a stop token, the length reached, or cancelled. Polls `should_stop`."""
        if self.finish == "length" and len(self.tokens) < self.req.max_new_tokens and self.should_stop is not None \
                and self.should_stop():
            self.finish = "cancelled"
        return self.finish != "length" or len(self.tokens) >= self.req.max_new_tokens

    def rows(self) -> Rows:
        rows = self.decoder.rows(self.tokens[-1], self.position)
        self.position += 1
        return rows

    def advance(self, logits: torch.Tensor) -> None:
        """logits [V] of this request's next token, on the host (`decode_step` copies them)."""
        self._emit(self.sampler(logits))

    def agreement(self, teacher: tuple[int, ...], snap) -> float:
        """Top-1 agreement with a reference answer fed in, replayed from `snap` (taken at the first token)."""
        teacher = teacher[: self.req.max_new_tokens]
        self.decoder.restore(snap)
        hits = int(int(self.first_logits.argmax()) == teacher[0])
        for i in range(1, len(teacher)):
            hits += int(int(self.decoder.step(teacher[i - 1], self.first_pos + i - 1).argmax()) == teacher[i])
        return hits / len(teacher)

    def result(self, agreement: float | None = None) -> Generated:
        t = self.timings
        return Generated(
            token_ids=tuple(self.tokens),
            first_logits=self.first_logits,
            ttft_s=t.ttft_s,
            prefill_s=t.prefill_s,
            reposition_s=t.reposition_s,
            decode_s=self.decode_s,
            recomputed=self.recomputed,
            finish_reason=self.finish,
            repaired=self.decoder.repaired,
            teacher_agreement=agreement,
            kv=self.decoder.kv,
        )


def decode_step(engine: Engine, streams: list[Stream],
                ride: Callable[[int], list[Rows]] | None = None) -> tuple[list[BaseException | None], torch.Tensor]:
    """One decode step of every stream in ONE forward (`Engine.forward_rows`), with the rows
    `ride(decode_rows)` returns (the scheduler's prompt pieces, given how many rows the decodes
    take) in the same forward.

    Returns (per stream, the error its token callback raised, None if it took its token: one
    request's failing consumer does not end the others'; the last hidden state [P, D] of each
    ridden piece). The decodes' logits come to the host in one copy.
    """
    t0 = time.perf_counter()
    rows = [st.rows() for st in streams]
    pieces = ride(sum(r.ids.numel() for r in rows)) if ride is not None else []
    hidden = engine.forward_rows(rows + pieces)  # [B + P, D]: each request's last row
    logits = engine.gen.logits(hidden[: len(rows)]).cpu() if rows else hidden[:0]  # [B, V]
    errors: list[BaseException | None] = []
    for st, row in zip(streams, logits):
        try:
            st.advance(row)
            errors.append(None)
        except Exception as exc:
            errors.append(exc)
    elapsed = time.perf_counter() - t0  # every stream waited for the whole step
    for st in streams:
        st.decode_s += elapsed
    return errors, hidden[len(rows):]


def decode_alone(engine: Engine, stream: Stream, teacher: tuple[int, ...] | None = None) -> Generated:
    """Decode a stream fresh from its prompt phase to its end, this request alone.

    teacher: token ids of a reference answer; when given, the decode is replayed from the first
    token's state with the teacher's tokens fed in, and the share of positions whose top-1 token
    equals the teacher's is returned as `teacher_agreement` (the answer itself is unchanged).
    """
    snap = stream.decoder.snapshot() if teacher else None
    while not stream.finished:
        error = decode_step(engine, [stream])[0][0]
        if error is not None:
            raise error
    if not teacher:
        return stream.result()
    repaired = stream.decoder.repaired  # the replay rewinds the decoder to the first token
    t0 = time.perf_counter()
    agreement = stream.agreement(teacher, snap)
    return replace(stream.result(agreement), replay_s=time.perf_counter() - t0, repaired=repaired)
