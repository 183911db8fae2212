"""CPU speed of the torch backend on a 16-frame 224px clip (issue: >= 2x faster than upstream on 2 threads), next
to the pure-torch oracle.

Run: python -m pytest bench/bench_reference_cpu.py --benchmark-only -p no:cacheprovider
(-k torch for the fast path only)
"""

from __future__ import annotations

import pytest
import torch

from fixture_data import LOCAL, SHARED, cases, load_case, model_input, shared_available
from triton_autogaze import AutoGaze


@pytest.fixture(scope="module")
def clip16():
    if shared_available():
        c = [c for c in cases(SHARED) if c["name"] == "clip224_t16"][0]
        return model_input(c, load_case(SHARED, c))
    c = [c for c in cases(LOCAL) if c["name"] == "clip224_t4"][0]
    v = model_input(c, load_case(LOCAL, c))
    return v.repeat(1, 4, 1, 1, 1)  # 16 frames


@pytest.fixture(scope="module", params=["torch", "oracle"])
def model(request):
    """backend="torch" (the fused C++ CPU decoder, cpu_fast.py) and the pure-torch oracle (reference=True), measured
    in the same session: this VM's speed moves with its neighbours, so the ratio is the steadier figure."""
    torch.set_num_threads(2)
    return AutoGaze.from_pretrained(LOCAL / "model", device="cpu", backend="torch",
                                    reference=request.param == "oracle")


@pytest.mark.benchmark(group="reference-cpu-16x224")
@pytest.mark.parametrize("tau", [None, -2.0], ids=["full-budget", "task-loss-stopping"])
def test_reference_cpu_clip16(benchmark, model, clip16, tau):
    trace = benchmark.pedantic(model.generate, args=(clip16,), kwargs=dict(gazing_ratio=0.75, task_loss_requirement=tau),
                               rounds=3, iterations=1, warmup_rounds=1)
    assert trace.num_frames == 16
