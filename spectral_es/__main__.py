"""``python -m spectral_es``: the ``spectral-es`` command line."""

import sys

from spectral_es.cli import main

if __name__ == "__main__":
    sys.exit(main())
