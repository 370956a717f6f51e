"""Bookkeeping of a scheduler step: working-cache slots and the token budget (no tensors).

Two budgets decide what one step runs, as in vLLM's scheduler (`vllm/v1/core/sched/`):

- **Working-cache slots** (`SlotPool`): a request's private cache holds its context after the
  shared prefix plus its answer, `slots` tokens, reserved whole when it is admitted and freed
  when it finishes. Reserving the whole length up front means a running request never has to
  be preempted; a request waits (back-pressure) while the pool is short, and one that needs
  more than the pool holds can never run and is refused (`fits`).
- **The token budget** (`plan_step`): every running decode takes one row of the step; what the
  budget has left goes to prompt work (prefill, probe, recompute, repair rows) in chunks,
  first to requests whose prompt phase is under way, then to waiting requests in arrival
  order. The head of the queue is never skipped for a smaller one behind it, so no request
  starves; a request whose slots do not fit stops admission for this step.

Decode rows are memory-bound (every step reads all the weights), so prompt rows that ride in
the same forward are nearly free: SARATHI's piggybacking. A step with `token_budget` rows is
one forward.
"""

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

from chunkcache.errors import ConfigError

RequestId = Hashable


class SlotPool:
    """Working-cache slots (tokens) reserved per request.

    >>> pool = SlotPool(100); pool.allocate("a", 60); pool.can_allocate(50)
    False
    """

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ConfigError(f"the working-cache pool needs at least 1 slot, got {capacity}")
        self.capacity = capacity
        self._held: dict[RequestId, int] = {}
        self.used = 0
        self.peak = 0

    def fits(self, slots: int) -> bool:
        """Could a request of `slots` ever run (the pool empty)?"""
        return slots <= self.capacity

    def can_allocate(self, slots: int) -> bool:
        return self.used + slots <= self.capacity

    def allocate(self, rid: RequestId, slots: int) -> None:
        if rid in self._held:
            raise ValueError(f"request {rid!r} already holds {self._held[rid]} slots")
        if slots < 0 or not self.can_allocate(slots):
            raise ValueError(f"cannot allocate {slots} slots for {rid!r}: {self.used} of {self.capacity} in use")
        self._held[rid] = slots
        self.used += slots
        self.peak = max(self.peak, self.used)

    def free(self, rid: RequestId) -> None:
        """Release what `rid` holds (nothing if it holds nothing: a failed admission)."""
        self.used -= self._held.pop(rid, 0)

    @property
    def free_slots(self) -> int:
        return self.capacity - self.used


@dataclass(frozen=True)
class Waiting:
    """A request not admitted yet: the slots its cache needs and the prompt rows it will run."""

    rid: RequestId
    slots: int
    prompt_rows: int


@dataclass(frozen=True)
class StepPlan:
    """One step: a row for each decode, and (request, rows) of prompt work in budget order."""

    decodes: tuple[RequestId, ...]
    prompt: tuple[tuple[RequestId, int], ...]
    admitted: tuple[RequestId, ...]  # waiting requests admitted by this step (slots allocated)

    @property
    def rows(self) -> int:
        return len(self.decodes) + sum(n for _, n in self.prompt)


def plan_step(decoding: Sequence[RequestId], prompting: Sequence[tuple[RequestId, int]], waiting: Sequence[Waiting],
              pool: SlotPool, token_budget: int, max_running: int) -> StepPlan:
    """Which rows the next step runs.

    decoding: running requests past their prompt phase (one row each; never cut by the budget:
    a decode step is the unit the budget rides on). prompting: (request, prompt rows left) of
    admitted requests, in admission order. waiting: the queue, in arrival order. Admits from the
    head of the queue while the pool has its slots, fewer than `max_running` requests run, and
    the budget has rows left; allocates their slots in `pool`.
    """
    if token_budget < 1 or max_running < 1:
        raise ConfigError(f"token_budget and max_running must be >= 1, got {token_budget}, {max_running}")
    left = token_budget - len(decoding)
    prompt: list[tuple[RequestId, int]] = []
    for rid, rows in prompting:
        if left <= 0:
            break
        take = min(rows, left)
        prompt.append((rid, take))
        left -= take
    admitted: list[RequestId] = []
    running = len(decoding) + len(prompting)
    for w in waiting:
        if left <= 0 or running >= max_running or not pool.can_allocate(w.slots):
            break  # the head waits; nothing behind it overtakes
        pool.allocate(w.rid, w.slots)
        admitted.append(w.rid)
        running += 1
        take = min(w.prompt_rows, left)
        if take:
            prompt.append((w.rid, take))
            left -= take
    return StepPlan(tuple(decoding), tuple(prompt), tuple(admitted))
