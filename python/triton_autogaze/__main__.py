"""``python -m triton_autogaze``: the same command line as ``triton-autogaze`` (see :mod:`triton_autogaze.cli`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
