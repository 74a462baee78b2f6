"""Pieces for the Bing client tests: the API reference's example responses, test pictures,
and aioresponses bound to a test endpoint (:class:`MockApi`)."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aioresponses import aioresponses
from PIL import Image
from yarl import URL

__all__ = ["BASE", "FIXTURES", "CompatResponse", "MockApi", "load_fixture", "make_image"]

#: The example responses, copied from the API reference.
FIXTURES = Path(__file__).resolve().parents[1] / "bing" / "fixtures"


def load_fixture(name: str) -> Any:
    """One example response from tests/bing/fixtures (copied from the API reference)."""
    return orjson.loads((FIXTURES / name).read_bytes())


def make_image(
    width: int, height: int, fmt: str = "JPEG", *, noise: bool = False, mode: str = "RGB"
) -> bytes:
    """Encode a test picture; ``noise`` makes it incompressible (large files)."""
    if noise:
        import numpy as np

        rng = np.random.default_rng(1234)
        channels = 4 if mode == "RGBA" else 3
        array = rng.integers(0, 256, size=(height, width, channels), dtype=np.uint8)
        picture = Image.fromarray(array, mode)
    else:
        picture = Image.new(mode, (width, height), (200, 30, 60, 128)[: len(mode)])
    buffer = io.BytesIO()
    picture.save(buffer, fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buffer.getvalue()


class _NoStreamWriter:
    """Stands in for the request writer aioresponses does not build (the request is 'sent')."""

    output_size = 0


class CompatResponse(aiohttp.ClientResponse):
    """aioresponses 0.7.9 does not pass the ``stream_writer`` aiohttp 3.14 requires.

    Known upstream: pnuckowski/aioresponses#289. Passed as ``response_class``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("stream_writer", _NoStreamWriter())
        super().__init__(*args, **kwargs)


BASE = "https://api.example.test/"


class MockApi:
    """aioresponses bound to the test endpoint: queue answers, then inspect the requests."""

    def __init__(self, mocked: aioresponses) -> None:
        self.mocked = mocked

    def add(
        self,
        endpoint: str = "search",
        *,
        method: str = "GET",
        status: int = 200,
        body: str | bytes = b"",
        payload: Any = None,
        headers: dict[str, str] | None = None,
        exception: BaseException | None = None,
        repeat: bool = False,
    ) -> None:
        """Queue one answer for ``endpoint``."""
        pattern = re.compile(rf"^{re.escape(BASE)}v7\.0/images/{endpoint}(\?.*)?$")
        self.mocked.add(
            pattern,
            method=method,
            status=status,
            body=body,
            payload=payload,
            headers=headers,
            exception=exception,
            repeat=repeat,
            response_class=CompatResponse,
        )

    def calls(self) -> list[tuple[str, URL, dict[str, Any]]]:
        """Every request made, as (method, URL, keyword arguments)."""
        return [
            (method, url, call.kwargs)
            for (method, url), calls in self.mocked.requests.items()
            for call in calls
        ]
