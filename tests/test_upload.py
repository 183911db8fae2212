"""The pinned upload stage (upload.py): grouping, reuse of the buffer, and the pipeline's use of it."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from triton_autogaze.pipeline import packed_frames
from triton_autogaze.upload import MIN_STAGED_BYTES, HostUploader

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (pinned memory, DMA)")


def _frames(T, H, W, C=4, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (T, H, W, C), dtype=np.uint8))


@pytest.mark.parametrize("T,threads", [(1, 4), (5, 2), (16, 3), (17, 8)])
def test_staged_copy_equals_source(T, threads):
    up = HostUploader("cpu", threads=threads, pin=False)
    src = _frames(T, 9, 7)
    out = up(src)
    assert out.shape == src.shape and out.dtype == torch.uint8
    assert torch.equal(out, src)
    assert out.data_ptr() != src.data_ptr()
    up.close()


def test_buffer_is_reused_and_grown():
    up = HostUploader("cpu", threads=2, pin=False)
    a, b, c = _frames(4, 8, 8, seed=1), _frames(2, 8, 8, seed=2), _frames(6, 8, 8, seed=3)
    outs = [up(x) for x in (a, b)]
    ptr = up._buf.data_ptr()
    assert torch.equal(outs[0], a) and torch.equal(outs[1], b)  # the second upload did not corrupt the first
    assert up._buf.data_ptr() == ptr
    assert torch.equal(up(c), c) and up._buf.numel() >= c.numel()
    up.close()
    assert up._buf is None
    assert torch.equal(up(a), a)  # usable again after close
    up.close()


def test_small_or_strided_sources_skip_the_stage():
    up = HostUploader("cpu", pin=False)
    small = torch.zeros(1, 4, 4, 4, dtype=torch.uint8)
    big = torch.zeros(MIN_STAGED_BYTES, dtype=torch.uint8).view(-1, 64, 64, 4)
    assert not up.wanted(small)
    assert up.wanted(big)
    assert not up.wanted(big.transpose(1, 2))  # not contiguous: the plain copy handles strides


def test_packed_frames_uses_the_stage_only_for_its_device():
    calls = []

    class Spy(HostUploader):
        def __call__(self, src):
            calls.append(src.shape)
            return super().__call__(src)

    big = np.zeros((4, 1024, 1024, 4), dtype=np.uint8)  # 16 MiB
    big[1, 2, 3] = 7
    out = packed_frames(big, torch.device("cpu"), uploader=Spy("cpu", pin=False))
    assert calls == [(4, 1024, 1024, 4)] and int(out[1, 2, 3, 0]) == 7
    packed_frames(big, torch.device("cpu"), uploader=Spy("meta", pin=False))  # another device: plain path
    assert len(calls) == 1


@needs_cuda
def test_gpu_pinned_upload_matches_and_overlaps_reuse():
    up = HostUploader("cuda", threads=4)
    srcs = [_frames(16, 270, 480, seed=s) for s in range(3)]  # 8.3 MB each: three uploads through one buffer
    outs = [up(s) for s in srcs]
    torch.cuda.synchronize()
    for s, o in zip(srcs, outs):
        assert o.is_cuda and torch.equal(o.cpu(), s)
    assert up._buf.is_pinned()
    up.close()


def test_size_window_of_the_stage(monkeypatch):
    import triton_autogaze.upload as U

    monkeypatch.setattr(U, "MIN_STAGED_BYTES", 100)
    monkeypatch.setattr(U, "MAX_STAGED_BYTES", 1000)
    up = HostUploader("cpu", pin=False)
    assert not up.wanted(torch.zeros(1, 5, 5, 3, dtype=torch.uint8))  # 75 bytes: below
    assert up.wanted(torch.zeros(2, 10, 10, 3, dtype=torch.uint8))  # 600 bytes
    assert not up.wanted(torch.zeros(4, 10, 10, 3, dtype=torch.uint8))  # 1200 bytes: above the cap


def test_pinning_failure_falls_back_with_a_warning(monkeypatch):
    import triton_autogaze.upload as U

    monkeypatch.setattr(U, "MIN_STAGED_BYTES", 10)
    up = HostUploader("cpu", pin=False)
    real_empty = torch.empty

    def failing_empty(*a, **k):
        if "pin_memory" in k:
            raise RuntimeError("cudaHostAlloc: out of memory")
        return real_empty(*a, **k)

    src = _frames(3, 5, 5)
    assert up.wanted(src)
    monkeypatch.setattr(torch, "empty", failing_empty)
    with pytest.warns(RuntimeWarning, match="pinned upload stage"):
        out = up(src)
    assert torch.equal(out, src)
    assert not up.wanted(src)  # staging is off from now on


@pytest.mark.parametrize("nbytes,threads,piece", [(0, 2, 16), (1, 3, 16), (1000, 4, 7), (4096, 1, 4096),
                                                  (100_003, 8, 1024)])
def test_ordered_copy_copies_every_byte(nbytes, threads, piece):
    from triton_autogaze._stage import OrderedCopy

    src = np.random.default_rng(nbytes).integers(0, 256, nbytes + 1, dtype=np.uint8)[:nbytes]
    dst = np.zeros(max(nbytes, 1), dtype=np.uint8)
    c = OrderedCopy(src.ctypes.data, dst.ctypes.data, nbytes, threads, piece)
    got = c.wait(nbytes // 2)
    assert nbytes // 2 <= got <= nbytes
    assert np.array_equal(dst[:got], src[:got]), "the reported prefix must be copied"
    c.join()
    assert c.ready() == nbytes == c.nbytes and np.array_equal(dst[:nbytes], src)
    assert c.wait(nbytes + 10) == nbytes  # asking past the end returns the whole copy


def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads through /proc")
def test_ordered_copies_reuse_the_process_copy_threads():
    """Copy threads persist between uploads (no thread start per upload), also from several Python threads at
    once, every byte right. In a freshly forked child (which has none of its parent's copy threads): the first
    upload starts its threads, and 50 more start none."""
    import multiprocessing as mp
    import threading

    from triton_autogaze._stage import OrderedCopy

    src = np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8)
    dst = np.zeros_like(src)  # (an address of a temporary array would point at freed memory)
    OrderedCopy(src.ctypes.data, dst.ctypes.data, src.size, 4, 1000).join()  # the pool started here
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_child_copies, args=(q,))
    p.start()
    first, then, later, ok = q.get(timeout=60)
    p.join(timeout=60)
    assert ok and p.exitcode == 0
    assert then == first + 3, "the first upload in the child starts its 3 copy threads, which stay"
    assert later == then, "later uploads start no thread"
    errors = []

    def many():
        for i in range(25):
            out = np.zeros_like(src)
            OrderedCopy(src.ctypes.data, out.ctypes.data, src.size, 4, 512 + i).join()
            if not np.array_equal(out, src):
                errors.append(i)

    ts = [threading.Thread(target=many) for _ in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors


def _child_copies(q):
    from triton_autogaze._stage import OrderedCopy

    src = np.random.default_rng(1).integers(0, 256, 100_000, dtype=np.uint8)
    first = _threads()
    ok = True
    counts = []
    for i in range(51):
        dst = np.zeros_like(src)
        OrderedCopy(src.ctypes.data, dst.ctypes.data, src.size, 3, 1000 + i).join()
        ok = ok and bool(np.array_equal(dst, src))
        counts.append(_threads())
    q.put((first, counts[0], counts[-1], ok))


def test_ordered_copy_rejects_bad_arguments():
    from triton_autogaze._stage import OrderedCopy

    a, b = np.zeros(64, np.uint8), np.zeros(64, np.uint8)
    with pytest.raises(ValueError, match="overlap"):
        OrderedCopy(a.ctypes.data, a.ctypes.data + 8, 32, 2)
    with pytest.raises(ValueError, match="piece"):
        OrderedCopy(a.ctypes.data, b.ctypes.data, 64, 2, 0)
    with pytest.raises(ValueError, match="threads"):
        OrderedCopy(a.ctypes.data, b.ctypes.data, 64, 0)
    with pytest.raises(ValueError, match="nbytes"):
        OrderedCopy(a.ctypes.data, b.ctypes.data, -1, 1)


def test_staged_frames_arrive_in_order():
    """wait(stop) delivers frames [0, stop) before the upload ends; a non-contiguous source is copied first."""
    up = HostUploader("cpu", threads=3, pin=False, piece=100)
    src = _frames(6, 10, 12)
    with up.staged(src) as st:
        st.wait(2)
        assert torch.equal(st.out[:2], src[:2])
        st.wait(1)  # already there: no-op
        st.wait(6)
        assert torch.equal(st.out, src)
    strided = _frames(4, 12, 10).transpose(1, 2)
    assert torch.equal(up(strided), strided)
    with pytest.raises(ValueError, match="CPU"):
        up(torch.zeros(2, 2, device="meta"))
