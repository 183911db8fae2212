"""AutoGaze preprocessing core: uint8 RGB/RGBA frames -> Pillow-exact bilinear resize -> float32 CHW.

Every function raises ValueError naming the bad argument; frames are read in place when C-contiguous uint8.
"""

import numpy as np
import numpy.typing as npt

PRECISION_BITS: int  # Pillow's fixed-point fraction bits (22)

def output_size(height: int, width: int, shortest_edge: int) -> tuple[int, int]:
    """Shortest-edge output size (out_height, out_width), truncated like upstream's int(S * long / short)."""

def resize_coeffs(
    in_size: int, out_size: int
) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int32], npt.NDArray[np.int32]]:
    """Pillow bilinear taps for one axis: (lo [M] int32, count [M] int32, weights [M, K] int32 fixed-point)."""

def resize(
    frames: npt.NDArray[np.uint8], out_height: int, out_width: int, num_threads: int = 0
) -> npt.NDArray[np.uint8]:
    """frames [T, H, W, 3|4] or [H, W, 3|4] uint8 -> [T, out_height, out_width, 3] uint8, Pillow BILINEAR."""

def preprocess(
    frames: npt.NDArray[np.uint8],
    *,
    shortest_edge: int,
    do_resize: bool = True,
    do_rescale: bool = True,
    rescale_factor: float = 1 / 127.5,
    offset: bool = True,
    do_normalize: bool = True,
    image_mean: tuple[float, float, float] = (0.485, 0.456, 0.406),
    image_std: tuple[float, float, float] = (0.229, 0.224, 0.225),
    num_threads: int = 0,
) -> npt.NDArray[np.float32]:
    """frames [T, H, W, 3|4] or [H, W, 3|4] uint8 -> [T, 3, H', W'] float32 (SPEC §2.1)."""
