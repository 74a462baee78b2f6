"""The URL set every tool of a scenario fetches, derived from the emulator's corpus.

The corpus is a pure function of its configuration, so the harness computes, without asking
the emulator, exactly which image URLs each benchmark query returns:
``Corpus(config).query_results(q)[i].key`` served at ``base_url + "img/" + key``. bingcrawl
reaches the same URLs through the search API (or ``--urls`` where the CLI has it); the
baselines and the peers read them from a file in the format each wants.
"""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass
from pathlib import Path

from yarl import URL

from bingcrawl.emulator.cli import parse_format_mix
from bingcrawl.emulator.corpus import Corpus, CorpusConfig

__all__ = ["EmulatorSpec", "UrlSet", "query_texts"]


def query_texts(count: int) -> list[str]:
    """The benchmark's query strings (``bench 0``, ``bench 1``, ...)."""
    return [f"bench {i}" for i in range(count)]


@dataclass(frozen=True, slots=True)
class EmulatorSpec:
    """One emulator process: its latencies, image size and corpus shape.

    ``unique_share`` < 1 makes the rest of every result list pictures from the corpus's
    shared pool (byte-identical across queries), so a large crawl is cheap to serve: the
    memory scenario uses it. ``warm_queries`` are rendered before the emulator answers.
    ``format_mix`` is the emulator's ``--format-mix`` (JPEG only by default, like the targets;
    the emulator's own default mixes in 15 % PNG, GIF and WebP, which cost 3-7x a JPEG to hash).
    """

    image_latency: float = 0.05
    api_latency: float = 0.02
    image_size: str = "30k"
    results_per_query: int = 1000
    qps: float = 0.0
    unique_share: float = 1.0
    warm_queries: int = 0
    format_mix: str = "jpeg"  # the emulator's --format-mix: JPEG only, as the targets assume
    #: The emulator's ``--network`` ("" = none: one host, ``image_latency`` for every image;
    #: ``web``: behaviour per Host name, ``host_latency`` the median of the hosts' latencies,
    #: ``host_latency_p99`` the latency 1 % of hosts exceed).
    network: str = ""
    host_latency: float = 0.2
    host_latency_p99: float = 5.0
    drip_max: float = 120.0  # a dripping host's body ends after this long
    cache_mb: int = 256

    def corpus_config(self) -> CorpusConfig:
        """The corpus the emulator process builds from :meth:`args`."""
        return CorpusConfig(
            results_per_query=self.results_per_query,
            image_size=self.image_size,
            fault_rate=0.0,
            exact_dup_rate=0.0,
            near_dup_rate=0.0,
            cross_query_rate=round(1.0 - self.unique_share, 6),
            format_mix=parse_format_mix(self.format_mix),
        )

    def args(self) -> list[str]:
        """``python -m bingcrawl.emulator`` flags for this spec."""
        corpus = self.corpus_config()
        argv = [
            "--qps", repr(self.qps),
            "--api-latency", repr(self.api_latency),
            "--image-latency", repr(self.image_latency),
            "--image-size", self.image_size,
            "--results-per-query", str(self.results_per_query),
            "--fault-rate", "0",
            "--exact-dup-rate", "0",
            "--near-dup-rate", "0",
            "--cross-query-rate", repr(corpus.cross_query_rate),
            "--format-mix", self.format_mix,
            "--cache-mb", str(self.cache_mb),
            "--log-level", "WARNING",
        ]  # fmt: skip
        if self.network:
            argv += ["--network", self.network, "--host-latency", repr(self.host_latency),
                     "--host-latency-p99", repr(self.host_latency_p99),
                     "--drip-max", repr(self.drip_max)]  # fmt: skip
        if self.warm_queries:
            argv += ["--warm-count", str(self.results_per_query)]
            for q in query_texts(self.warm_queries):
                argv += ["--warm", q]
        return argv

    def label(self) -> str:
        """A short description for tables."""
        text = f"{self.image_size}, img {self.image_latency * 1000:g} ms"
        if self.network:
            text = (
                f"{self.image_size}, {self.network} network, host latency median "
                f"{self.host_latency * 1000:g} ms, p99 {self.host_latency_p99:g} s"
            )
        if self.format_mix != "jpeg":
            text += f", {self.format_mix}"
        return text if self.unique_share >= 1 else f"{text}, {self.unique_share:.0%} unique"


@dataclass(frozen=True, slots=True)
class UrlSet:
    """The first ``queries`` benchmark queries of an emulator, all their results.

    With ``hosts`` > 0 each URL gets one of that many host names under ``domain``
    (``h0042.web.test``, same port as ``base_url``), drawn from a Zipf law of exponent
    ``host_skew`` (a few hosts with many images, most with a few, as in search results), the
    same draw in every run. Every tool then connects those names to the emulator
    (:mod:`benchmarks.hostmap`).
    """

    base_url: str
    spec: EmulatorSpec
    queries: int
    hosts: int = 0
    host_skew: float = 0.5
    domain: str = "web.test"

    def host_names(self, count: int) -> list[str]:
        """The host name of each of ``count`` URLs (empty without :attr:`hosts`)."""
        if self.hosts <= 0:
            return []
        names = [f"h{i:04d}.{self.domain}" for i in range(self.hosts)]
        weights = [1.0 / (k + 1) ** self.host_skew for k in range(self.hosts)]
        rng = random.Random(f"bench-hosts-{self.hosts}-{self.host_skew}")
        rng.shuffle(names)  # which name is popular is not its number
        return rng.choices(names, weights, k=count)

    @property
    def query_list(self) -> list[str]:
        """The query strings."""
        return query_texts(self.queries)

    def urls(self) -> list[str]:
        """Every image URL, query by query, in rank order."""
        corpus = Corpus(self.spec.corpus_config())
        keys = [spec.key for q in self.query_list for spec in corpus.query_results(q)]
        if self.hosts <= 0:
            return [f"{self.base_url}img/{key}" for key in keys]
        port = URL(self.base_url).port
        return [f"http://{host}:{port}/img/{key}"
                for host, key in zip(self.host_names(len(keys)), keys, strict=True)]  # fmt: skip

    def __len__(self) -> int:
        return self.queries * self.spec.results_per_query

    def write(self, directory: Path) -> dict[str, Path]:
        """Write the list as ``urls.txt``, ``urls.csv`` (``url`` column, for parquet-less
        readers) and ``queries.txt``; returns the paths by format."""
        directory.mkdir(parents=True, exist_ok=True)
        urls = self.urls()
        txt, csv_path, queries = (
            directory / "urls.txt",
            directory / "urls.csv",
            directory / "queries.txt",
        )
        txt.write_text("".join(f"{u}\n" for u in urls))
        with csv_path.open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["url"])
            writer.writerows([u] for u in urls)
        queries.write_text("".join(f"{q}\n" for q in self.query_list))
        return {"txt": txt, "csv": csv_path, "queries": queries}
