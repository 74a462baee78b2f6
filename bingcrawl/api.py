"""The Python API: :func:`crawl`, one call, like ``img2dataset.download``.

``crawl(queries, out, **options)`` runs a whole crawl and returns its
:class:`~bingcrawl.engine.crawler.CrawlReport`. Every option is the ``bingcrawl crawl`` flag
with underscores (``--per-host`` -> ``per_host``, ``--license`` -> ``license``,
``--allow-network`` -> ``allow_network=[...]``), validated exactly as the command line
validates it, before any request (:class:`~bingcrawl.errors.ConfigError` names the option).
An early stop (quota, signal, a full disk, an unreachable API) is not an exception here: the
report says why (``report.reason``) and the same call resumes the crawl.

Inside your own event loop: :func:`stream` (``async with stream(...) as images: async for
image in images``) yields each stored image as it lands, and
:class:`~bingcrawl.engine.crawler.Crawler` runs a crawl under your control. URLs can come
from Python as well as from files: ``url_items=`` takes any iterable (see
:func:`~bingcrawl.urllist.write_url_items`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType

from bingcrawl import eventloop
from bingcrawl.config import CrawlConfig, QuerySpec
from bingcrawl.engine.crawler import STOPS, Crawler, CrawlReport
from bingcrawl.errors import ConfigError
from bingcrawl.options import build_config, options_namespace
from bingcrawl.records import Outcome, Status
from bingcrawl.urllist import UrlColumns, UrlItem, write_url_items

__all__ = ["CrawlStream", "crawl", "make_config", "stream"]


def make_config(
    queries: Iterable[str | QuerySpec] | str = (),
    out: str | os.PathLike[str] = "data",
    *,
    url_items: Iterable[UrlItem] | None = None,
    env: Mapping[str, str] | None = None,
    progress: bool = False,
    **options: object,
) -> CrawlConfig:
    """The validated :class:`CrawlConfig` of ``crawl(queries, out, **options)``.

    ``url_items``: URLs from Python (any iterable of URLs, ``(url, caption[, label])``
    tuples or mappings with ``url``/``caption``/``label``), streamed to
    ``OUT/inputs/<hash>/urls.jsonl`` and crawled like a ``urls=[...]`` file (so they resume the
    same way). ``env`` supplies the key and endpoint when the options do not
    (``BING_SEARCH_V7_SUBSCRIPTION_KEY``, ``BING_SEARCH_V7_ENDPOINT``; default: the process
    environment). ``BINGCRAWL_*`` variables are the command line's business: they are not read.
    """
    namespace, specs = options_namespace(queries, Path(out), options)
    if url_items is not None:
        if isinstance(url_items, str | bytes):
            raise ConfigError("url_items", "expected an iterable of URLs, got one string")
        columns = UrlColumns(namespace.url_col, namespace.caption_col, namespace.label_col)
        namespace.urls = [*namespace.urls, write_url_items(url_items, Path(out), columns)]
    environ = os.environ if env is None else env
    keys = (
        "BING_SEARCH_V7_SUBSCRIPTION_KEY",
        "BING_SEARCH_V7_ENDPOINT",
        "BRAVE_SEARCH_API_KEY",
        "SERPAPI_API_KEY",
        "OPENVERSE_CLIENT_ID",
        "OPENVERSE_CLIENT_SECRET",
    )
    return build_config(
        namespace, {k: environ[k] for k in keys if k in environ}, specs=specs, progress=progress
    )


def crawl(
    queries: Iterable[str | QuerySpec] | str = (),
    out: str | os.PathLike[str] = "data",
    *,
    on_outcome: Callable[[Outcome], object] | None = None,
    url_items: Iterable[UrlItem] | None = None,
    env: Mapping[str, str] | None = None,
    progress: bool = False,
    event_loop: str = "auto",
    **options: object,
) -> CrawlReport:
    """Crawl ``queries`` into ``out`` and return the report; the same call resumes.

    ``queries``: search queries (each labelled by its slug) or :class:`QuerySpec` with labels
    of their own; none is fine with ``urls=[...]``, ``url_items=...``, ``seed_images=...`` or
    ``trending=True``.
    ``on_outcome`` is called with every candidate's :class:`~bingcrawl.records.Outcome`
    (stored, duplicate, failed, skipped) as it is decided, in the crawl's event loop: keep it
    quick. ``progress`` shows the live display on a terminal. ``event_loop``: ``auto``
    (uvloop when installed), ``asyncio`` or ``uvloop``. Raises :class:`ConfigError` for a bad
    option (before any request), :class:`AuthenticationError` for a refused key, and returns
    the report for every other ending (``report.reason``).
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:  # (before anything is built: a url_items generator is not consumed for nothing)
        raise RuntimeError(
            "bingcrawl.crawl() runs its own event loop; inside one, use "
            "`async with bingcrawl.stream(...)` or `async with bingcrawl.Crawler(config)`"
        )
    config = make_config(queries, out, url_items=url_items, env=env, progress=progress, **options)
    return eventloop.run(_run(config, on_outcome), event_loop)


async def _run(config: CrawlConfig, on_outcome: Callable[[Outcome], object] | None) -> CrawlReport:
    async with Crawler(config, on_outcome=on_outcome) as crawler:
        return await _run_crawler(crawler)


class CrawlStream:
    """The stored images of a crawl, as they land (see :func:`stream`).

    ``async with`` starts the crawl in the running loop; ``async for`` yields each
    :class:`~bingcrawl.records.Outcome` whose status is wanted (stored images by default:
    ``outcome.path`` is the file, or the shard). Leaving the block early (a ``break``, an
    exception) stops the crawl as a first Ctrl-C would: the downloads in flight finish,
    everything decided is checkpointed, and the same call resumes. After the block,
    :attr:`report` is the run's :class:`CrawlReport`; an error that is not an early stop
    (a refused key, say) is raised from the ``async with``.

    Outcomes wait in memory until you take them: a consumer much slower than the crawl
    holds them all (a few hundred bytes each).
    """

    def __init__(self, config: CrawlConfig, statuses: Iterable[Status]) -> None:
        self.config = config
        self.statuses = frozenset(statuses)
        self.report: CrawlReport | None = None
        self._queue: asyncio.Queue[Outcome | None] = asyncio.Queue()
        self._crawler: Crawler | None = None
        self._run: asyncio.Task[CrawlReport] | None = None

    def _take(self, outcome: Outcome) -> None:
        if outcome.status in self.statuses:
            self._queue.put_nowait(outcome)

    async def __aenter__(self) -> CrawlStream:
        crawler = Crawler(self.config, on_outcome=self._take)
        await crawler.__aenter__()
        self._crawler = crawler
        self._run = asyncio.create_task(_run_crawler(crawler), name="bingcrawl-stream")
        self._run.add_done_callback(lambda _: self._queue.put_nowait(None))
        return self

    def __aiter__(self) -> AsyncIterator[Outcome]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Outcome]:
        while (outcome := await self._queue.get()) is not None:
            yield outcome
        self._queue.put_nowait(None)  # a second loop over a finished stream ends at once

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        crawler, run = self._crawler, self._run
        assert crawler is not None
        assert run is not None
        try:
            if not run.done():
                crawler.stop()
            try:
                self.report = await asyncio.shield(run)
            except asyncio.CancelledError:
                # Cancelled while the crawl winds down: let it finish its checkpoint (it is
                # stopping already, bounded by --grace) before its resources close.
                with contextlib.suppress(BaseException):
                    await run
                raise
        finally:
            await crawler.aclose()


def stream(
    queries: Iterable[str | QuerySpec] | str = (),
    out: str | os.PathLike[str] = "data",
    *,
    statuses: Iterable[Status] = (Status.STORED,),
    url_items: Iterable[UrlItem] | None = None,
    env: Mapping[str, str] | None = None,
    **options: object,
) -> CrawlStream:
    """Crawl in the running event loop, yielding outcomes as they are decided.

    ``async with bingcrawl.stream(["red panda"], "data", limit=50) as images:
    async for image in images: ...`` (options as for :func:`crawl`; ``statuses``: which
    outcomes to yield, stored images by default). Options are validated here, before the
    ``async with``.
    """
    config = make_config(queries, out, url_items=url_items, env=env, progress=False, **options)
    return CrawlStream(config, statuses)


async def _run_crawler(crawler: Crawler) -> CrawlReport:
    try:
        return await crawler.run()
    except STOPS:
        assert crawler.report is not None
        return crawler.report
