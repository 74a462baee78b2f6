"""``python -m bingcrawl``: the same entry point as the ``bingcrawl`` console script."""

from bingcrawl.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
