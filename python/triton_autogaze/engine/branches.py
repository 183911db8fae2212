"""CUDA-graph IF nodes: parts of a captured call that run only while a device flag says so.

With task-loss stopping, most of a frame's decode steps find every row stopped: their ~17 kernels are launched
and return at once (~20 us a step on an H100), about 270 of a 16-frame clip's 320 decode steps at tau -2. Inside a
capture, :meth:`Branches.if_any` puts what follows into the body of a conditional node that runs only when some
entry of an int32 flag tensor is nonzero at that point of the replay; the engine nests each decode step of a frame
in the previous step's node, so the first step that finds every row stopped skips the rest of the frame.

The driver has conditional nodes from CUDA 12.3 (torch >= 2.12 wraps them as
``CUDAGraph.begin_capture_to_if_node``; this module talks to the driver API directly, so it also runs on older
torch). The node's value is set on the device by ``cudaGraphSetConditional``, a device function the driver
supplies: a one-thread kernel, written in PTX below and JIT-compiled by the driver, reads the flags and sets it.
The first use on a device captures and replays a small graph that checks what the engine relies on (a nested
body runs exactly when its flag says so, a PDL launch is accepted as a body's first kernel and right after a
node); where any of it fails, :meth:`Branches.supported` is False with the reason and callers capture as before.
"""

from __future__ import annotations

import contextlib
import ctypes
import threading

import torch

# The one-thread setter: value = any(flags[0:n] != 0). ``cudaGraphSetConditional`` is resolved by the driver when
# it loads the module (the same declaration NVRTC emits for it).
_SETTER_PTX = r"""
.version 7.0
.target sm_70
.address_size 64

.extern .func cudaGraphSetConditional
(
    .param .b64 cudaGraphSetConditional_param_0,
    .param .b32 cudaGraphSetConditional_param_1
)
;

.visible .entry autogaze_set_if_any(
    .param .u64 handle_param,
    .param .u64 flags_param,
    .param .u32 n_param
)
{
    .reg .pred %p<3>;
    .reg .b32 %r<6>;
    .reg .b64 %rd<5>;

    ld.param.u64 %rd1, [handle_param];
    ld.param.u64 %rd2, [flags_param];
    ld.param.u32 %r1, [n_param];
    cvta.to.global.u64 %rd2, %rd2;
    mov.u32 %r2, 0;
    mov.u32 %r3, 0;
$L_loop:
    setp.ge.s32 %p1, %r3, %r1;
    @%p1 bra $L_done;
    mul.wide.s32 %rd3, %r3, 4;
    add.s64 %rd4, %rd2, %rd3;
    ld.global.u32 %r4, [%rd4];
    setp.ne.s32 %p2, %r4, 0;
    selp.u32 %r5, 1, 0, %p2;
    or.b32 %r2, %r2, %r5;
    add.s32 %r3, %r3, 1;
    bra.uni $L_loop;
$L_done:
    {
    .param .b64 param0;
    st.param.b64 [param0+0], %rd1;
    .param .b32 param1;
    st.param.b32 [param1+0], %r2;
    call.uni cudaGraphSetConditional, (param0, param1);
    }
    ret;
}
"""

_NODE_CONDITIONAL = 13  # CU_GRAPH_NODE_TYPE_CONDITIONAL
_COND_IF = 0  # CU_GRAPH_COND_TYPE_IF
_SET_DEPENDENCIES = 1  # CU_STREAM_SET_CAPTURE_DEPENDENCIES
_CAPTURE_GLOBAL = 0  # CU_STREAM_CAPTURE_MODE_GLOBAL (what torch.cuda.graph captures in by default)
_CAPTURE_ACTIVE = 1  # CU_STREAM_CAPTURE_STATUS_ACTIVE


class _EdgeData(ctypes.Structure):  # CUgraphEdgeData
    _fields_ = [("from_port", ctypes.c_ubyte), ("to_port", ctypes.c_ubyte), ("type", ctypes.c_ubyte),
                ("reserved", ctypes.c_ubyte * 5)]


class _ConditionalParams(ctypes.Structure):  # CUDA_CONDITIONAL_NODE_PARAMS
    _fields_ = [("handle", ctypes.c_uint64), ("type", ctypes.c_int), ("size", ctypes.c_uint),
                ("phGraph_out", ctypes.POINTER(ctypes.c_void_p)), ("ctx", ctypes.c_void_p)]


class _NodeParams(ctypes.Structure):  # CUgraphNodeParams (256 bytes: type, reserved, a 232-byte union, reserved)
    _fields_ = [("type", ctypes.c_int), ("reserved0", ctypes.c_int * 3), ("conditional", _ConditionalParams),
                ("pad", ctypes.c_byte * (232 - ctypes.sizeof(_ConditionalParams))), ("reserved2", ctypes.c_longlong)]


class _Driver:
    """The few CUDA driver entry points conditional nodes need (libcuda, loaded by torch already)."""

    def __init__(self):
        lib = ctypes.CDLL("libcuda.so.1")
        P, U64, SZ = ctypes.c_void_p, ctypes.c_uint64, ctypes.c_size_t
        sig = {
            "cuGetErrorString": [ctypes.c_int, ctypes.POINTER(ctypes.c_char_p)],
            "cuCtxGetCurrent": [ctypes.POINTER(P)],
            "cuModuleLoadData": [ctypes.POINTER(P), ctypes.c_char_p],
            "cuModuleGetFunction": [ctypes.POINTER(P), P, ctypes.c_char_p],
            "cuLaunchKernel": [P, ctypes.c_uint, ctypes.c_uint, ctypes.c_uint, ctypes.c_uint, ctypes.c_uint,
                               ctypes.c_uint, ctypes.c_uint, P, ctypes.POINTER(P), ctypes.POINTER(P)],
            "cuStreamGetCaptureInfo_v3": [P, ctypes.POINTER(ctypes.c_int), ctypes.POINTER(U64), ctypes.POINTER(P),
                                          ctypes.POINTER(ctypes.POINTER(P)),
                                          ctypes.POINTER(ctypes.POINTER(_EdgeData)), ctypes.POINTER(SZ)],
            "cuGraphConditionalHandleCreate": [ctypes.POINTER(U64), P, P, ctypes.c_uint, ctypes.c_uint],
            "cuGraphAddNode_v2": [ctypes.POINTER(P), P, ctypes.POINTER(P), ctypes.POINTER(_EdgeData), SZ,
                                  ctypes.POINTER(_NodeParams)],
            "cuStreamUpdateCaptureDependencies_v2": [P, ctypes.POINTER(P), ctypes.POINTER(_EdgeData), SZ,
                                                     ctypes.c_uint],
            "cuStreamBeginCaptureToGraph": [P, P, ctypes.POINTER(P), ctypes.POINTER(_EdgeData), SZ, ctypes.c_int],
            "cuStreamEndCapture": [P, ctypes.POINTER(P)],
        }
        for name, args in sig.items():
            fn = getattr(lib, name)  # AttributeError on a driver older than CUDA 12.3
            fn.argtypes, fn.restype = args, ctypes.c_int
            setattr(self, name, fn)

    def check(self, rc: int, what: str) -> None:
        if rc != 0:
            s = ctypes.c_char_p()
            self.cuGetErrorString(rc, ctypes.byref(s))
            raise RuntimeError(f"{what}: CUDA driver error {rc} ({(s.value or b'?').decode()})")


_driver: _Driver | None = None
_lock = threading.Lock()


def _get_driver() -> _Driver:
    global _driver
    with _lock:
        if _driver is None:
            _driver = _Driver()
        return _driver


class Branches:
    """Conditional bodies inside a ``torch.cuda.graph`` capture on one CUDA device (see the module docstring).

    Use :meth:`supported` before the capture (it loads the setter and, the first time, runs the check); inside
    the capture, ``with branches.if_any(flags): ...`` captures the block into an IF node's body. Blocks nest.
    Nothing in a body may allocate memory (the caching allocator only serves the capture's own stream).
    """

    _by_device: dict[int, "Branches"] = {}

    def __init__(self, device: torch.device):
        self.device = device
        self._ok: bool | None = None
        self.reason = ""
        self._drv: _Driver | None = None
        self._setter = ctypes.c_void_p()
        self._streams: list[torch.cuda.Stream] = []
        self._depth = 0

    @classmethod
    def for_device(cls, device: torch.device) -> "Branches":
        index = device.index if device.index is not None else torch.cuda.current_device()
        if index not in cls._by_device:
            cls._by_device[index] = cls(torch.device("cuda", index))
        return cls._by_device[index]

    def supported(self) -> bool:
        """Whether conditional bodies work here (first call: load the setter and run the check; not during a
        capture). False with :attr:`reason` set on a driver before CUDA 12.3 or when the check fails."""
        if self._ok is None:
            try:
                with torch.cuda.device(self.device):
                    torch.empty(1, device=self.device)  # the device's primary context, current on this thread
                    self._load()
                    self._check()
                self._ok = True
            except Exception as e:  # noqa: BLE001 - any failure means: capture without branches
                self._ok, self.reason = False, f"{type(e).__name__}: {e}"
        return self._ok

    def _load(self) -> None:
        drv = _get_driver()
        mod = ctypes.c_void_p()
        drv.check(drv.cuModuleLoadData(ctypes.byref(mod), _SETTER_PTX.encode()), "cuModuleLoadData(setter)")
        drv.check(drv.cuModuleGetFunction(ctypes.byref(self._setter), mod, b"autogaze_set_if_any"),
                  "cuModuleGetFunction(autogaze_set_if_any)")
        self._drv = drv

    @contextlib.contextmanager
    def if_any(self, flags: torch.Tensor):
        """Capture the block into an IF node that runs when any of ``flags`` (int32, contiguous, this device) is
        nonzero when the replay reaches it. Only inside a ``torch.cuda.graph`` capture, after :meth:`supported`."""
        if self._ok is False or self._drv is None:  # (during the check itself: loaded, _ok still None)
            raise RuntimeError("Branches.if_any: conditional nodes are not available here "
                               f"({self.reason or 'call supported() first'})")
        if flags.dtype != torch.int32 or not flags.is_contiguous() or flags.device != self.device:
            raise ValueError(f"flags: expected a contiguous int32 tensor on {self.device}, "
                             f"got {flags.dtype} on {flags.device}")
        drv = self._drv
        outer = torch.cuda.current_stream(self.device)
        s_out = ctypes.c_void_p(outer.cuda_stream)
        graph = self._capturing_graph(s_out)[0]
        ctx = ctypes.c_void_p()
        drv.check(drv.cuCtxGetCurrent(ctypes.byref(ctx)), "cuCtxGetCurrent")
        handle = ctypes.c_uint64()
        drv.check(drv.cuGraphConditionalHandleCreate(ctypes.byref(handle), graph, ctx, 0, 0),
                  "cuGraphConditionalHandleCreate")
        a_handle, a_ptr, a_n = ctypes.c_uint64(handle.value), ctypes.c_uint64(flags.data_ptr()), \
            ctypes.c_uint32(flags.numel())
        args = (ctypes.c_void_p * 3)(*(ctypes.addressof(a) for a in (a_handle, a_ptr, a_n)))
        drv.check(drv.cuLaunchKernel(self._setter, 1, 1, 1, 1, 1, 1, 0, s_out, args, None),
                  "cuLaunchKernel(setter)")
        graph, deps, edges, n = self._capturing_graph(s_out)
        params = _NodeParams()
        params.type = _NODE_CONDITIONAL
        params.conditional.handle = handle.value
        params.conditional.type = _COND_IF
        params.conditional.size = 1
        params.conditional.ctx = ctx
        node = ctypes.c_void_p()
        drv.check(drv.cuGraphAddNode_v2(ctypes.byref(node), graph, deps, edges, n, ctypes.byref(params)),
                  "cuGraphAddNode_v2(conditional)")
        body = ctypes.c_void_p(params.conditional.phGraph_out[0])
        drv.check(drv.cuStreamUpdateCaptureDependencies_v2(s_out, ctypes.byref(node), None, 1, _SET_DEPENDENCIES),
                  "cuStreamUpdateCaptureDependencies_v2")
        while len(self._streams) <= self._depth:
            self._streams.append(torch.cuda.Stream(self.device))
        child = self._streams[self._depth]
        s_child = ctypes.c_void_p(child.cuda_stream)
        drv.check(drv.cuStreamBeginCaptureToGraph(s_child, body, None, None, 0, _CAPTURE_GLOBAL),
                  "cuStreamBeginCaptureToGraph")
        self._depth += 1
        try:
            with torch.cuda.stream(child):
                yield
        finally:
            self._depth -= 1
            done = ctypes.c_void_p()
            drv.check(drv.cuStreamEndCapture(s_child, ctypes.byref(done)), "cuStreamEndCapture(body)")

    def _capturing_graph(self, stream: ctypes.c_void_p):
        drv = self._drv
        status, cid, graph = ctypes.c_int(), ctypes.c_uint64(), ctypes.c_void_p()
        deps, edges, n = ctypes.POINTER(ctypes.c_void_p)(), ctypes.POINTER(_EdgeData)(), ctypes.c_size_t()
        drv.check(drv.cuStreamGetCaptureInfo_v3(stream, ctypes.byref(status), ctypes.byref(cid), ctypes.byref(graph),
                                                ctypes.byref(deps), ctypes.byref(edges), ctypes.byref(n)),
                  "cuStreamGetCaptureInfo_v3")
        if status.value != _CAPTURE_ACTIVE:
            raise RuntimeError("Branches.if_any: the current stream is not capturing a CUDA graph")
        return graph, deps, edges, n.value

    def _check(self) -> None:
        """Capture and replay a graph of two nested bodies around PDL launches; raise unless each body ran exactly
        when its flags said so."""
        from triton_autogaze.kernels._pdl import pdl_increment  # the engine's launch options, on a tiny kernel

        dev = self.device
        flags = torch.zeros(2, 3, dtype=torch.int32, device=dev)
        count = torch.zeros(4, dtype=torch.int32, device=dev)
        pdl_increment(count[0:1])  # compile outside the capture
        torch.cuda.synchronize(dev)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            pdl_increment(count[0:1])
            with self.if_any(flags[0]):
                pdl_increment(count[1:2])  # a PDL launch as a body's first node
                with self.if_any(flags[1]):
                    pdl_increment(count[2:3])
            pdl_increment(count[3:4])  # a PDL launch right after a conditional node
        cases = [((0, 0, 0), (0, 0, 0)), ((0, 2, 0), (0, 0, 0)), ((0, 0, 1), (-1, 0, 0)), ((0, 0, 0), (0, 0, 5))]
        want = torch.zeros(4, dtype=torch.int32)
        for f0, f1 in cases:
            flags.copy_(torch.tensor([f0, f1], dtype=torch.int32))
            count.zero_()
            g.replay()
            torch.cuda.synchronize(dev)
            want.copy_(torch.tensor([1, int(any(f0)), int(any(f0) and any(f1)), 1], dtype=torch.int32))
            got = count.cpu()
            if not torch.equal(got, want):
                raise RuntimeError(f"conditional check: flags {f0} / {f1} ran {got.tolist()}, "
                                   f"expected {want.tolist()}")
