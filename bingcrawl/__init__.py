"""bingcrawl: image-search queries in, a clean, deduplicated, resumable image dataset out."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
