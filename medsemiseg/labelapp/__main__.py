"""``python -m medsemiseg.labelapp install <bundle folder> [--app APP] [--name NAME] [--model FILE]``."""

import sys

from medsemiseg.labelapp.install import main

if __name__ == "__main__":
    sys.exit(main())
