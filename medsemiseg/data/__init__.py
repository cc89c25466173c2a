"""Data layer: readers (:mod:`.io`), splits (:mod:`.splits`), preparation (:mod:`.prepare`), built-in data
(:mod:`.builtin`) and synthetic phantoms (:mod:`.synthetic`).  No training logic lives here.

The synthetic generator is not imported eagerly (it is only needed to build the built-in data set).
"""

from .builtin import ensure_synthetic_datalist, resplit_prepared
from .io import DataReadError, LoadSliced, check_label_values, detect_format, iter_slices, read_image, read_mask
from .prepare import build_datalist, prepare_chase, prepare_covid, prepare_folder
from .splits import carve_heldout, chase_protocol_split, num_labeled, parse_fraction, split_labeled

__all__ = [
    "DataReadError",
    "LoadSliced",
    "build_datalist",
    "carve_heldout",
    "chase_protocol_split",
    "check_label_values",
    "detect_format",
    "ensure_synthetic_datalist",
    "iter_slices",
    "num_labeled",
    "parse_fraction",
    "prepare_chase",
    "prepare_covid",
    "prepare_folder",
    "read_image",
    "read_mask",
    "resplit_prepared",
    "split_labeled",
]
