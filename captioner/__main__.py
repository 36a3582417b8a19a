"""``python -m captioner`` (also what ``torchrun -m captioner`` runs)."""

import sys

from captioner.cli import console

sys.exit(console())
