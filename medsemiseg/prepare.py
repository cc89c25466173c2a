"""``python -m medsemiseg.prepare {chase,drive,covid,covid-semiseg,folder} ...``: see :mod:`medsemiseg.data.prepare` and docs/data.md."""

import sys

from medsemiseg.data.prepare import main

if __name__ == "__main__":
    sys.exit(main())
