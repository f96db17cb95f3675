"""`python -m ppocma_jax ...`: see ppocma_jax.cli."""

import os
import sys

from . import cli

code = cli.main()
if cli.ABORTED:  # stopped at once by a signal: a compiled chunk may still run in a worker thread; do not wait for it
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
sys.exit(code)
