"""``python -m medsemiseg.prepare {chase,drive,covid,covid-semiseg,folder}``: raw data -> 2D slices + a MONAI datalist JSON.

Every subcommand writes, under ``--out DIR``:

- ``images/`` and ``labels/``: the 2D items.  CT slices are 2D NIfTI ``float32`` in HU with the in-plane spacing
  and the slice's position kept in the affine; CT masks are 2D NIfTI ``uint8``.  Pictures (fundus photographs) are
  copied unchanged (no re-encoding loss); their masks are written as 0/1 (or 0..K-1) PNGs.
- ``pool.json``: every prepared item with its role fixed at preparation time (training pool with labels,
  extra unlabelled images, validation, test).  It lets :func:`resplit_prepared` write a datalist for another
  labelled fraction / seed without touching the slices.
- ``datalist.json``: ``{"labeled", "unlabeled", "validation", "test", "meta"}`` for ``--labeled-fraction`` and
  ``--seed``, paths relative to the JSON's folder (``monai.data.load_decathlon_datalist`` resolves them).

One module per data set layout -- :mod:`.covid`, :mod:`.chase`, :mod:`.public` (DRIVE, COVID-SemiSeg),
:mod:`.folder` -- on what they share: :mod:`.core` (classes, writers, warnings, failed runs cleaned up) and
:mod:`.pool` (``pool.json``, the staged ``--out``, the datalists); :mod:`.cli` is the command line. The functions
:func:`prepare_covid`, :func:`prepare_chase`, :func:`prepare_drive`, :func:`prepare_covid_semiseg` and
:func:`prepare_folder` are the CLI without argparse; :mod:`medsemiseg.data.builtin` runs the very same code on the
synthetic data.
"""

from .chase import prepare_chase
from .cli import main
from .core import CHASE_CLASSES, COVID_CLASSES, DATALIST_FILE, MASK_SUFFIXES, ORIENTATIONS, POOL_FILE, PrepareNote
from .core import PrepareWarning, orient_slice
from .covid import prepare_covid
from .folder import find_mask, prepare_folder
from .pool import build_datalist, datalist_filename, resplit_prepared
from .public import prepare_covid_semiseg, prepare_drive

__all__ = [
    "CHASE_CLASSES",
    "COVID_CLASSES",
    "DATALIST_FILE",
    "MASK_SUFFIXES",
    "ORIENTATIONS",
    "POOL_FILE",
    "PrepareNote",
    "PrepareWarning",
    "build_datalist",
    "datalist_filename",
    "find_mask",
    "main",
    "orient_slice",
    "prepare_chase",
    "prepare_covid",
    "prepare_covid_semiseg",
    "prepare_drive",
    "prepare_folder",
    "resplit_prepared",
]
