#!/usr/bin/env python
"""Side-by-side step-time benchmark; the same as ``xbp bench``.

python scripts/bench.py                         # tiny, mid, large on every usable backend
python scripts/bench.py --cases mid --json bench.json --memory
"""

import sys

from xbp.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
