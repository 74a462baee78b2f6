"""A Bing Image Search API v7 emulator with a synthetic, fault-injecting image host.

Microsoft retired the Bing Search APIs in August 2025; bingcrawl is tested, benchmarked and
demonstrated against this emulator instead. It speaks /v7.0/images/search, /details,
/trending and /visualsearch as the reference describes (ErrorResponse bodies, 429 with
Retry-After, 403 quota, empty-200 throttling, overlapping pages) and serves the images its
results point to, some of them deliberately broken.

>>> async with EmulatorServer(EmulatorConfig(qps=None)) as server:   # doctest: +SKIP
...     endpoint = server.base_url      # e.g. "http://127.0.0.1:40123/"
...     server.state.requests()         # every API request, as the server saw it
"""

from __future__ import annotations

from bingcrawl.emulator.app import create_app
from bingcrawl.emulator.config import EmulatorConfig
from bingcrawl.emulator.corpus import FAULT_KINDS, Corpus, CorpusConfig, ImageSpec
from bingcrawl.emulator.imagehost import ImageHost, ImageHostConfig
from bingcrawl.emulator.network import NetworkProfile
from bingcrawl.emulator.server import EmulatorServer, start_emulator_process
from bingcrawl.emulator.state import ApiRequest, EmulatorState

__all__ = [
    "FAULT_KINDS",
    "ApiRequest",
    "Corpus",
    "CorpusConfig",
    "EmulatorConfig",
    "EmulatorServer",
    "EmulatorState",
    "ImageHost",
    "ImageHostConfig",
    "ImageSpec",
    "NetworkProfile",
    "create_app",
    "start_emulator_process",
]
