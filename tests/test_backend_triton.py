"""The model with backend="triton" (fused patch embed + Triton engine) equals the torch backend, end to end.

On a machine without a GPU the kernels run in Triton's CPU interpreter, so the case is kept tiny.
"""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from fixture_data import LOCAL, cases, load_case, model_dir, model_input  # noqa: E402
from triton_autogaze import AutoGaze  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(scope="module")
def models():
    pytest.importorskip("triton")
    if DEVICE == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("triton was imported before TRITON_INTERPRET could be set")
    ref = AutoGaze.from_pretrained(model_dir(), device=DEVICE, backend="torch")
    fast = AutoGaze.from_pretrained(model_dir(), device=DEVICE, backend="triton", use_cuda_graph=False)
    return ref, fast


@pytest.mark.parametrize("semantics", ["upstream", "independent"])
def test_triton_backend_equals_torch(models, semantics):
    ref, fast = models
    c = [c for c in cases(LOCAL) if c["name"] == "batch2_t4"][0]
    video = model_input(c, load_case(LOCAL, c))[:, :2].to(DEVICE)  # 2 rows, 2 frames
    kw = dict(gazing_ratio=0.05, task_loss_requirement=-2.0, batch_semantics=semantics)
    a = ref.generate(video, **kw)
    b = fast.generate(video, **kw)
    assert torch.equal(a.gazing_pos.cpu(), b.gazing_pos.cpu())
    assert torch.equal(a.if_padded_gazing.cpu(), b.if_padded_gazing.cpu())
    assert torch.equal(a.num_gazing_each_frame.cpu(), b.num_gazing_each_frame.cpu())
    assert (a.confidence.cpu() - b.confidence.cpu()).abs().max().item() <= 1e-5
