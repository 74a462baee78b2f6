"""bingcrawl: image-search queries in, a clean, deduplicated, resumable image dataset out.

The Python API (see the README's "Python API")::

    import bingcrawl

    report = bingcrawl.crawl(["red panda"], "data", key="...", license="Public", limit=200)
    print(report.reason, report.stored, report.dataset_stored)

:func:`crawl` runs a crawl in one call; :func:`stream` yields its stored images as they land,
inside your event loop; :class:`Crawler` runs one inside your event loop
(``async with Crawler(config) as crawler: await crawler.run()``) from a :class:`CrawlConfig`
(build one with :func:`make_config`, validated like the command line); :class:`CrawlReport`
says how it ended. Every error bingcrawl raises on purpose is a :class:`BingCrawlError`.
Names are imported lazily, so ``import bingcrawl`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from bingcrawl.api import CrawlStream, crawl, make_config, stream
    from bingcrawl.config import CrawlConfig, QuerySpec
    from bingcrawl.engine.crawler import Crawler, CrawlReport
    from bingcrawl.errors import (
        ApiConnectionError,
        ApiError,
        AuthenticationError,
        BingCrawlError,
        CheckpointError,
        ConfigError,
        IncompleteCrawlError,
        Interrupted,
        QuotaExceededError,
        ResumeMismatchError,
        StorageError,
        ThrottledError,
    )
    from bingcrawl.events import Event, Events
    from bingcrawl.records import Candidate, Outcome, Status

_LAZY: dict[str, str] = {
    "crawl": "bingcrawl.api",
    "make_config": "bingcrawl.api",
    "stream": "bingcrawl.api",
    "CrawlStream": "bingcrawl.api",
    "Event": "bingcrawl.events",
    "Events": "bingcrawl.events",
    "CrawlConfig": "bingcrawl.config",
    "QuerySpec": "bingcrawl.config",
    "Crawler": "bingcrawl.engine.crawler",
    "CrawlReport": "bingcrawl.engine.crawler",
    "Candidate": "bingcrawl.records",
    "Outcome": "bingcrawl.records",
    "Status": "bingcrawl.records",
    **dict.fromkeys(
        (
            "ApiConnectionError", "ApiError", "AuthenticationError", "BingCrawlError",
            "CheckpointError", "ConfigError", "IncompleteCrawlError", "Interrupted",
            "QuotaExceededError", "ResumeMismatchError", "StorageError", "ThrottledError",
        ),
        "bingcrawl.errors",
    ),
}  # fmt: skip

__all__ = [
    "ApiConnectionError",
    "ApiError",
    "AuthenticationError",
    "BingCrawlError",
    "Candidate",
    "CheckpointError",
    "ConfigError",
    "CrawlConfig",
    "CrawlReport",
    "CrawlStream",
    "Crawler",
    "Event",
    "Events",
    "IncompleteCrawlError",
    "Interrupted",
    "Outcome",
    "QuerySpec",
    "QuotaExceededError",
    "ResumeMismatchError",
    "Status",
    "StorageError",
    "ThrottledError",
    "__version__",
    "crawl",
    "make_config",
    "stream",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'bingcrawl' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
