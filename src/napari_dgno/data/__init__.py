"""Training data: clean sources, focus finding, and datasets of (blurred, sharp) pairs.

numpy/scipy/torch only (never Qt or napari), shared by the training loop, the CLI and the
fine-tune dock.
"""

from napari_dgno.data.clean_images import (
    Cells3dSplit,
    cells3d_images,
    cells3d_split,
    load_cells3d_nuclei,
    procedural_nuclei,
)
from napari_dgno.data.datasets import (
    FolderPairs,
    PairDataset,
    PairedArrays,
    SimulatedPairs,
    ZStackPairs,
    fixed_validation_set,
    random_dihedral,
)
from napari_dgno.data.focus import find_focus_plane, focus_measure

__all__ = [
    "Cells3dSplit",
    "FolderPairs",
    "PairDataset",
    "PairedArrays",
    "SimulatedPairs",
    "ZStackPairs",
    "cells3d_images",
    "cells3d_split",
    "find_focus_plane",
    "fixed_validation_set",
    "focus_measure",
    "load_cells3d_nuclei",
    "procedural_nuclei",
    "random_dihedral",
]
