"""``python -m classicnets`` (and ``torchrun -m classicnets``) runs the command line."""

import sys

from .cli import main

sys.exit(main())
