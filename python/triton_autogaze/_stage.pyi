"""Ordered multi-threaded host memcpy for the pinned upload stage (the first bytes are ready first)."""

class OrderedCopy:
    """Copies ``nbytes`` from address ``src`` to ``dst`` with ``threads`` of the process's C++ copy threads (started
    on first use and kept between copies) taking ``piece``-byte pieces in source order. The caller keeps both
    buffers alive until :meth:`join` (dropping the object also waits for the copy)."""

    nbytes: int

    def __init__(self, src: int, dst: int, nbytes: int, threads: int, piece: int = 1 << 20) -> None: ...
    def wait(self, need: int) -> int:
        """Block (GIL released) until at least ``need`` leading bytes are copied; returns the leading bytes copied."""
    def ready(self) -> int:
        """Leading bytes copied so far."""
    def join(self) -> None:
        """Wait for the whole copy (its threads go back to the process's pool)."""
