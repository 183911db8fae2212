"""A pytest-benchmark figure of the test that just ran, or None where there is none (``--benchmark-disable``:
the benchmark then runs once, untimed, e.g. a device call's compile pass before its timed one)."""

from __future__ import annotations


def stat(benchmark, name: str) -> float | None:
    """``benchmark.stats.stats.<name>`` (seconds: "median", "mean", "min", ...) or None."""
    stats = getattr(benchmark, "stats", None)
    return None if stats is None else getattr(stats.stats, name)
