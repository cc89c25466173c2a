"""Transition alias of :mod:`medsemiseg.bundle` (removed once every caller imports the package's modules)."""

from medsemiseg.bundle.checkpoints import *  # noqa: F401,F403
from medsemiseg.bundle.checkpoints import RUN_FILE  # noqa: F401
from medsemiseg.bundle.cli import *  # noqa: F401,F403
from medsemiseg.bundle.datalists import *  # noqa: F401,F403
from medsemiseg.bundle.inputs import *  # noqa: F401,F403
from medsemiseg.bundle.resume import *  # noqa: F401,F403
from medsemiseg.bundle.settings import *  # noqa: F401,F403
from medsemiseg.bundle.writer import *  # noqa: F401,F403
from medsemiseg.data.datalist import load_split  # noqa: F401
