"""Host-side launch plan of one call: frames, selection steps and upper bounds on cache lengths.

Nothing here reads device memory: every step of every frame is launched, and kernels skip finished rows.
The plan only needs the budgets and an upper bound on the cache length and pending chunk at the call's start.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FramePlan:
    budget: int  # M_t
    steps: int  # ceil(M_t / K) selection steps
    start_hi: int  # upper bound of a row's cache length at the frame's start
    pending_hi: int  # upper bound of its pending chunk length

    @property
    def prefill_end_hi(self) -> int:
        return self.start_hi + self.pending_hi

    def step_n(self, s: int, K: int) -> int:
        """Ids chosen at step s (the last step may be cut by the budget)."""
        return min(K, self.budget - K * s)


@dataclass(frozen=True)
class CallPlan:
    frames: tuple[FramePlan, ...]
    end_hi: int  # upper bound of any key index + 1 touched by the call (the capacity it needs)
    pending_end_hi: int


def make_plan(budgets: list[int], K: int, N: int, start_hi: int, pending_hi: int) -> CallPlan:
    frames = []
    e, p = start_hi, pending_hi
    for m in budgets:
        steps = -(-m // K)
        frames.append(FramePlan(m, steps, e, p))
        e = e + p + N + K * (steps - 1)
        p = min(K, m)
    return CallPlan(tuple(frames), e, p)
