"""Fast generation engine: Triton kernels on static buffers, one CUDA graph per call shape."""

from .generator import EngineState, TritonGenerator

__all__ = ["TritonGenerator", "EngineState"]
