import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


import pytest  # noqa: E402


@pytest.fixture(scope="module")
def pipe():
    """The fixture-checkpoint pipeline on the test device (see fixture_data.PIPELINE_DEVICE)."""
    from fixture_data import PIPELINE_BACKEND, PIPELINE_DEVICE, model_dir
    from triton_autogaze.pipeline import AutoGazePipeline

    return AutoGazePipeline.from_pretrained(model_dir(), device=PIPELINE_DEVICE, backend=PIPELINE_BACKEND)
