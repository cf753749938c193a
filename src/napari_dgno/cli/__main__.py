"""``python -m napari_dgno.cli`` (what ``torchrun`` runs for multi-GPU training)."""

import sys

from . import main

sys.exit(main())
