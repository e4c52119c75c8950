"""`python -m jmvae ...` (what torchrun runs: `torchrun --nproc-per-node 2 -m jmvae train ...`)."""

import sys

from .cli import main

sys.exit(main())
