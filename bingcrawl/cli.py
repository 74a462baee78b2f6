"""Command line: flags -> config -> library call; errors -> exit codes. (Filled in by the pipeline work.)"""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``bingcrawl`` command line and return its exit status."""
    del argv
    print("bingcrawl: not yet implemented", file=sys.stderr)
    return 1
