"""``python -m medsemiseg.prepare {chase,covid,folder} ...``: see :mod:`medsemiseg.data.prepare` and docs/data.md."""

import sys

from medsemiseg.data.prepare import main

if __name__ == "__main__":
    sys.exit(main())
