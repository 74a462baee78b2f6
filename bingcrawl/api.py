"""The Python API: :func:`crawl`, one call, like ``img2dataset.download``.

``crawl(queries, out, **options)`` runs a whole crawl and returns its
:class:`~bingcrawl.pipeline.crawler.CrawlReport`. Every option is the ``bingcrawl crawl`` flag
with underscores (``--per-host`` -> ``per_host``, ``--license`` -> ``license``,
``--allow-network`` -> ``allow_network=[...]``), validated exactly as the command line
validates it, before any request (:class:`~bingcrawl.errors.ConfigError` names the option).
An early stop (quota, signal, a full disk, an unreachable API) is not an exception here: the
report says why (``report.reason``) and the same call resumes the crawl. For a crawl inside
your own event loop, use :class:`~bingcrawl.pipeline.crawler.Crawler` directly.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from bingcrawl import eventloop
from bingcrawl.config import CrawlConfig, QuerySpec
from bingcrawl.options import build_config, options_namespace
from bingcrawl.pipeline.crawler import STOPS, Crawler, CrawlReport
from bingcrawl.records import Outcome

__all__ = ["crawl", "make_config"]


def make_config(
    queries: Iterable[str | QuerySpec] | str = (),
    out: str | os.PathLike[str] = "data",
    *,
    env: Mapping[str, str] | None = None,
    progress: bool = False,
    **options: object,
) -> CrawlConfig:
    """The validated :class:`CrawlConfig` of ``crawl(queries, out, **options)``.

    ``env`` supplies the key and endpoint when the options do not
    (``BING_SEARCH_V7_SUBSCRIPTION_KEY``, ``BING_SEARCH_V7_ENDPOINT``; default: the process
    environment). ``BINGCRAWL_*`` variables are the command line's business: they are not read.
    """
    namespace, specs = options_namespace(queries, Path(out), options)
    environ = os.environ if env is None else env
    keys = ("BING_SEARCH_V7_SUBSCRIPTION_KEY", "BING_SEARCH_V7_ENDPOINT")
    return build_config(
        namespace, {k: environ[k] for k in keys if k in environ}, specs=specs, progress=progress
    )


def crawl(
    queries: Iterable[str | QuerySpec] | str = (),
    out: str | os.PathLike[str] = "data",
    *,
    on_outcome: Callable[[Outcome], object] | None = None,
    env: Mapping[str, str] | None = None,
    progress: bool = False,
    event_loop: str = "auto",
    **options: object,
) -> CrawlReport:
    """Crawl ``queries`` into ``out`` and return the report; the same call resumes.

    ``queries``: search queries (each labelled by its slug) or :class:`QuerySpec` with labels
    of their own; none is fine with ``urls=[...]``, ``seed_images=...`` or ``trending=True``.
    ``on_outcome`` is called with every candidate's :class:`~bingcrawl.records.Outcome`
    (stored, duplicate, failed, skipped) as it is decided, in the crawl's event loop: keep it
    quick. ``progress`` shows the live display on a terminal. ``event_loop``: ``auto``
    (uvloop when installed), ``asyncio`` or ``uvloop``. Raises :class:`ConfigError` for a bad
    option (before any request), :class:`AuthenticationError` for a refused key, and returns
    the report for every other ending (``report.reason``).
    """
    config = make_config(queries, out, env=env, progress=progress, **options)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise RuntimeError(
            "bingcrawl.crawl() runs its own event loop; inside one, use "
            "`async with bingcrawl.Crawler(config) as crawler: await crawler.run()`"
        )
    return eventloop.run(_run(config, on_outcome), event_loop)


async def _run(config: CrawlConfig, on_outcome: Callable[[Outcome], object] | None) -> CrawlReport:
    async with Crawler(config, on_outcome=on_outcome) as crawler:
        try:
            return await crawler.run()
        except STOPS:
            assert crawler.report is not None
            return crawler.report
