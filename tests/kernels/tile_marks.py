"""Marks shared by the kernel tests."""

import pytest
import torch

# tiles sized for the interpreter (the engine's CPU block sizes); compiled for a GPU they need more shared memory
# than it has (Triton's OutOfResources), so those cases run under the interpreter only
interp_tile = pytest.mark.skipif(torch.cuda.is_available(),
                                 reason="interpreter-sized tile: exceeds a GPU's shared memory (OutOfResources)")
