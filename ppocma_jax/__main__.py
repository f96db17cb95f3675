"""`python -m ppocma_jax ...`: see ppocma_jax.cli."""

import sys

from .cli import main

sys.exit(main())
