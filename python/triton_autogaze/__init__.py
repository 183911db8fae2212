"""triton_autogaze: fast, parity-exact AutoGaze inference (pure-torch reference + Triton backend)."""

from .checkpoint import CheckpointError, load_checkpoint
from .config import AutoGazeConfig, ConfigError, PreprocessorConfig
from .model import AutoGaze
from .pipeline import AutoGazePipeline, GazeOptions
from .tiling import MODES
from .trace import Fixation, GazeTrace
from .upstream import GazeKVCache

__all__ = [
    "AutoGaze",
    "AutoGazeConfig",
    "AutoGazeImageProcessor",
    "AutoGazePipeline",
    "GazeOptions",
    "MODES",
    "CheckpointError",
    "ConfigError",
    "Fixation",
    "GazeKVCache",
    "GazeTrace",
    "PreprocessorConfig",
    "load_checkpoint",
]
__version__ = "0.1.0"


def __getattr__(name):  # the processor pulls in the native extension; import it lazily
    if name == "AutoGazeImageProcessor":
        from .processing import AutoGazeImageProcessor

        return AutoGazeImageProcessor
    raise AttributeError(name)
