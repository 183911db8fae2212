"""A bounds checker for Triton's CPU interpreter (test utility).

Inside ``bounds_checked()``, every active lane of every masked load, store and atomic that an interpreted kernel
performs must fall inside one of the tensors passed to that launch; the offending accesses are collected, not
raised, so a test can report them all. Negative indices and 32-bit wraps that the torch references would hide
(they wrap or index numpy memory) show up here, while the GPU would fault only when the address is unmapped.

It hooks private interpreter internals (``GridExecutor._init_args_hst`` and ``InterpreterBuilder``'s
``create_masked_load/store``, ``create_atomic_rmw/cas``), present in Triton 3.x; ``available()`` says whether
this Triton has them.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import torch


@dataclass
class Violation:
    kernel: str
    access: str  # "load" | "store" | "atomic" | "cas"
    lanes: int  # how many active lanes fell outside every argument tensor
    offset_elems: int  # the first one's distance, in elements, from the start of the nearest argument tensor


@dataclass
class Report:
    violations: list[Violation] = field(default_factory=list)
    launches: int = 0


def _interp():
    import triton.runtime.interpreter as interp

    return interp


def available() -> bool:
    try:
        interp = _interp()
    except Exception:  # noqa: BLE001
        return False
    b = getattr(interp, "InterpreterBuilder", None)
    return (hasattr(getattr(interp, "GridExecutor", None), "_init_args_hst") and b is not None
            and all(hasattr(b, n) for n in ("create_masked_load", "create_masked_store", "create_atomic_rmw",
                                            "create_atomic_cas")))


def _extent(t: torch.Tensor) -> tuple[int, int] | None:
    """[first byte, last byte + 1) that a (possibly strided) tensor view spans."""
    if t.numel() == 0:
        return None
    lo = hi = 0
    for size, st in zip(t.shape, t.stride()):
        if st >= 0:
            hi += (size - 1) * st
        else:
            lo += (size - 1) * st
    es = t.element_size()
    return t.data_ptr() + lo * es, t.data_ptr() + (hi + 1) * es


@contextlib.contextmanager
def bounds_checked() -> Iterator[Report]:
    interp = _interp()
    ge, ib = interp.GridExecutor, interp.InterpreterBuilder
    saved = (ge._init_args_hst, ib.create_masked_load, ib.create_masked_store, ib.create_atomic_rmw,
             ib.create_atomic_cas)
    report = Report()
    ctx: dict = {"ranges": [], "name": "?"}

    def init_args(self, args_dev, kwargs):
        args_hst, kwargs_hst = saved[0](self, args_dev, kwargs)
        ctx["ranges"] = [e for a in list(args_hst) + list(kwargs_hst.values())
                         if isinstance(a, torch.Tensor) and (e := _extent(a))]
        ctx["name"] = getattr(self.fn, "__name__", "?")
        report.launches += 1
        return args_hst, kwargs_hst

    def check(ptrs, mask, handle, what):
        es = max(1, handle.get_element_ty().primitive_bitwidth // 8)
        p = np.asarray(ptrs).astype(np.uint64)
        m = np.ones(p.shape, bool) if mask is None else np.broadcast_to(np.asarray(mask), p.shape)
        p = p[m]
        if p.size == 0:
            return
        ok = np.zeros(p.shape, bool)
        for lo, hi in ctx["ranges"]:
            ok |= (p >= np.uint64(lo)) & (p + np.uint64(es) <= np.uint64(hi))
        if not ok.all():
            first = int(p[~ok][0])
            off = min(((first - lo) // es for lo, _ in ctx["ranges"]), key=abs, default=0)
            report.violations.append(Violation(ctx["name"], what, int((~ok).sum()), off))

    def load(self, ptrs, mask, *rest):
        check(ptrs.data, mask.data, ptrs, "load")
        return saved[1](self, ptrs, mask, *rest)

    def store(self, ptrs, value, mask, *rest):
        check(ptrs.data, mask.data, ptrs, "store")
        return saved[2](self, ptrs, value, mask, *rest)

    def rmw(self, op, ptr, val, mask, *rest):
        check(ptr.data, mask.data, ptr, "atomic")
        return saved[3](self, op, ptr, val, mask, *rest)

    def cas(self, ptr, *rest):
        check(ptr.data, None, ptr, "cas")
        return saved[4](self, ptr, *rest)

    ge._init_args_hst = init_args
    ib.create_masked_load, ib.create_masked_store, ib.create_atomic_rmw, ib.create_atomic_cas = load, store, rmw, cas
    try:
        yield report
    finally:
        (ge._init_args_hst, ib.create_masked_load, ib.create_masked_store, ib.create_atomic_rmw,
         ib.create_atomic_cas) = saved
