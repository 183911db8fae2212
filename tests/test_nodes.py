"""Pipeline nodes: input nodes feed clips, output nodes get packets whose helpers stay on the device."""

from __future__ import annotations


import numpy as np
import pytest
import torch

from fixture_data import PIPELINE_BACKEND, PIPELINE_DEVICE, random_rgba
from triton_autogaze.nodes import CallbackOutput, ListOutput, RgbaClipInput, TensorClipInput, gaze_clips, run_nodes
from triton_autogaze.pipeline import GazeOptions
from triton_autogaze.sparse import fixation_image_mask

OPTS = GazeOptions(gazing_ratio=0.05, task_loss_requirement=None)

DEVICE, BACKEND = PIPELINE_DEVICE, PIPELINE_BACKEND
rgba = random_rgba


def test_tensor_input_batch_rows_become_clips(pipe):
    video = torch.from_numpy(np.random.default_rng(1).standard_normal((2, 3, 3, 40, 56)).astype(np.float32))
    out = ListOutput()
    assert run_nodes(pipe, TensorClipInput(video, clip_len=2), [out], OPTS) == 4
    assert [p.index for p in out.packets] == [0, 1, 2, 3]
    assert [p.start_frame for p in out.packets] == [0, 2, 3, 5]
    assert [p.trace.num_frames for p in out.packets] == [2, 1, 2, 1]
    first = out.packets[0]
    want = pipe.trace_clip(video[0, :2], gazing_ratio=0.05, task_loss_requirement=None)
    assert torch.equal(first.trace.gazing_pos, want.gazing_pos)
    assert first.kind == "normalised" and first.mode == "resize-224"
    assert first.frame_tensor(1).shape == (3, 40, 56) and torch.equal(first.frame_tensor(1).cpu(), video[0, 1])


def test_rgba_input_iterable_and_callback(pipe):
    clips = [rgba(2, 30, 50, seed=2), rgba(1, 30, 50, seed=3)]
    seen = []
    opts = GazeOptions(mode="anyres-tile-224", gazing_ratio=0.05, task_loss_requirement=None)
    n = run_nodes(pipe, RgbaClipInput(iter(clips)), [CallbackOutput(lambda p: seen.append(p.start_frame))], opts)
    assert n == 2 and seen == [0, 2]


def test_packet_helpers(pipe):
    opts = GazeOptions(mode="tiled-full-resolution", gazing_ratio=0.05, task_loss_requirement=None)
    packet = next(gaze_clips(pipe, RgbaClipInput(rgba(1, 100, 250, seed=4)), opts))
    frame = packet.frame_tensor(0)
    assert frame.dtype == torch.uint8 and frame.shape == (100, 250, 4)
    mask = packet.frame_mask(0)
    assert mask.shape == (100, 250) and mask.dtype == torch.bool and mask.any()
    assert torch.equal(mask, fixation_image_mask(packet.trace, 0))
    tokens = packet.frame_pyramid_tokens(0, levels=2, patch_size=16)
    assert tokens.tokens.shape[1] == 3 * 16 * 16 and tokens.density.max() > 0
    # model_inputs are exactly what was gazed: gazing them again gives the same tiles
    inputs = packet.model_inputs()
    assert inputs.shape == (2, 1, 3, 224, 224)
    again = pipe.model.generate(inputs, gazing_ratio=0.05, batch_semantics="independent")
    assert torch.equal(again.gazing_pos, packet.trace.gazing_pos)


def test_custom_output_node_protocol(pipe):
    class Counter:
        def __init__(self):
            self.n, self.closed = 0, False

        def on_packet(self, packet):
            self.n += 1

        def close(self):
            self.closed = True

    node = Counter()
    run_nodes(pipe, RgbaClipInput(rgba(1, 16, 16)), [node], OPTS)
    assert node.n == 1 and node.closed
    with pytest.raises(TypeError, match="on_packet"):
        run_nodes(pipe, RgbaClipInput(rgba(1, 16, 16)), [object()], OPTS)
    with pytest.raises(TypeError, match="clips"):
        list(gaze_clips(pipe, rgba(1, 16, 16), OPTS))


def test_bad_input_nodes():
    with pytest.raises(ValueError, match="B, T, C, H, W"):
        TensorClipInput(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="T, H, W, C"):
        list(RgbaClipInput(np.zeros((4, 4, 4), np.uint8)).clips())
