"""Redaction covers every spelling of the key: an API or a proxy that echoes the header back
often percent-encodes it, with upper- or lower-case escapes, or form-encodes it."""

from __future__ import annotations

import io
import logging
import re
from pathlib import Path
from urllib.parse import quote, quote_plus

import orjson
import pytest

from bingcrawl.bing.client import BingClient, error_from_response
from bingcrawl.config import CrawlConfig, QuerySpec
from bingcrawl.obs.logs import RedactingFilter, TextFormatter, secret_forms

KEY = "Ab9+/= key&%"


def lower_escapes(text: str) -> str:
    """``text`` with its percent escapes in lower case (``%2F`` -> ``%2f``)."""
    return re.sub(r"%[0-9A-F]{2}", lambda m: m.group().lower(), text)


def spellings(key: str) -> list[str]:
    """Ways a server might write ``key`` back."""
    encoded = quote(key, safe="")
    return [
        key,
        quote(key),
        encoded,
        lower_escapes(encoded),
        quote_plus(key),
        lower_escapes(quote_plus(key)),
    ]


def test_secret_forms_cover_every_spelling() -> None:
    forms = secret_forms(KEY)
    assert set(spellings(KEY)) <= set(forms)
    assert list(forms) == sorted(forms, key=len, reverse=True)  # longest replaced first
    assert secret_forms("") == ()


@pytest.mark.parametrize("spelling", spellings(KEY))
def test_api_error_echoing_the_key_is_redacted(spelling: str) -> None:
    body = orjson.dumps(
        {
            "_type": "ErrorResponse",
            "errors": [
                {
                    "code": "InvalidAuthorization",
                    "message": f"key {spelling} refused",
                    "moreDetails": f"got {spelling}",
                    "parameter": f"header {spelling}",
                    "value": spelling,
                }
            ],
        }
    )
    error = error_from_response("search", 401, body, {}, secrets=(KEY,))
    for text in (str(error), repr(error), str(error.parameter), str(error.value)):
        assert spelling not in text
        assert "***" in text


@pytest.mark.parametrize("spelling", spellings(KEY))
def test_log_lines_are_redacted_in_every_spelling(spelling: str) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter([KEY]))
    handler.setFormatter(TextFormatter())
    logger = logging.getLogger("tests.security.redaction")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("GET http://example.invalid/?k=%s", spelling)
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    line = stream.getvalue()
    assert spelling not in line
    assert "k=***" in line


async def test_reprs_never_show_the_key(tmp_path: Path) -> None:
    config = CrawlConfig(out=tmp_path, queries=(QuerySpec.of("cats"),), key=KEY)
    client = BingClient(KEY, "http://127.0.0.1:9/")
    for text in (repr(config), str(config), repr(client)):
        assert not any(form in text for form in secret_forms(KEY))
    assert config.key == KEY
