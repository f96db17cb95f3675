"""`python -m ppocma_jax ...`: see ppocma_jax.cli."""

import os
import sys

from . import cli
from .compile_cache import compiling_in_background

code = cli.main()
# Stopped at once by a signal (a compiled chunk may still run in a worker thread), or stopped before the evaluation
# program was needed (it may still compile in the background): do not wait for them.
if cli.ABORTED or compiling_in_background():
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
sys.exit(code)
