"""``python -m ltaug STAGE [options]``: :func:`ltaug.commands.main`."""

import sys

from ltaug.commands import main

if __name__ == "__main__":
    sys.exit(main())
