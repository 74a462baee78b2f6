"""JSON shapes of the Bing v7 reference: Image, Query, ErrorResponse, and the insights token.

Only the emulator builds these; the client parses them independently (``bingcrawl.bing``),
so a disagreement between the two shows up in the contract tests instead of hiding.

Two reference details worth knowing:

* ``thumbnail`` of a Query object is ``{"thumbnailUrl": ...}`` in ``queryExpansions`` /
  ``pivotSuggestions`` / ``similarTerms`` (the search examples, seed 004) and ``{"url": ...}``
  in related searches (the Thumbnail object and the visual search examples, seed 003). The
  emulator writes each as its example does.
* The insights token is opaque to clients; the emulator's encodes the image's URL key
  (``ccid_...*mid_<imageId>*ek_<base64url key>``) or, for an uploaded image or an unknown
  URL, a digest (``bcid_<hex sha256>``), so /images/details can find what it refers to.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, quote_plus, urlsplit

import orjson
from aiohttp import web

if TYPE_CHECKING:
    from bingcrawl.emulator.corpus import ImageSpec

__all__ = [
    "ApiFailure",
    "Links",
    "TokenRef",
    "decode_token",
    "digest_token",
    "image_id",
    "image_json",
    "json_response",
    "query_json",
    "spec_token",
]

JSON = dict[str, Any]

_THUMB_SIDE = 474


def json_response(body: object, *, status: int = 200) -> web.Response:
    """A JSON response serialised with orjson."""
    return web.Response(
        body=orjson.dumps(body), status=status, content_type="application/json", charset="utf-8"
    )


class ApiFailure(Exception):
    """An API error answer, raised anywhere in a handler and rendered as an ErrorResponse."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        sub_code: str | None = None,
        parameter: str | None = None,
        value: str | None = None,
        more_details: str | None = None,
        outcome: str = "invalid_request",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.sub_code = sub_code
        self.message = message
        self.parameter = parameter
        self.value = value
        self.more_details = more_details
        self.outcome = outcome
        self.headers = headers or {}

    @classmethod
    def missing(cls, parameter: str) -> ApiFailure:
        """400 InvalidRequest / ParameterMissing naming ``parameter``."""
        return cls(
            400,
            "InvalidRequest",
            "Required parameter is missing.",
            sub_code="ParameterMissing",
            parameter=parameter,
        )

    @classmethod
    def invalid(cls, parameter: str, value: object, detail: str | None = None) -> ApiFailure:
        """400 InvalidRequest / ParameterInvalidValue naming ``parameter`` and ``value``."""
        return cls(
            400,
            "InvalidRequest",
            "Parameter has invalid value.",
            sub_code="ParameterInvalidValue",
            parameter=parameter,
            value=str(value),
            more_details=detail,
        )

    def body(self) -> JSON:
        """The reference's ErrorResponse object."""
        error: JSON = {"code": self.code}
        if self.sub_code is not None:
            error["subCode"] = self.sub_code
        error["message"] = self.message
        if self.more_details is not None:
            error["moreDetails"] = self.more_details
        if self.parameter is not None:
            error["parameter"] = self.parameter
        if self.value is not None:
            error["value"] = self.value
        return {"_type": "ErrorResponse", "errors": [error]}

    def response(self) -> web.Response:
        """The HTTP answer: status, ErrorResponse body, extra headers."""
        resp = json_response(self.body(), status=self.status)
        resp.headers.update(self.headers)
        return resp


@dataclass(frozen=True, slots=True)
class Links:
    """Where the URLs in a response point: the API's own origin and the images' origin."""

    api: str  # e.g. "http://127.0.0.1:8000" (no trailing slash)
    images: str
    prefix: str = ""  # "" or "/bing" (the older cognitive.microsoft.com path layout)

    def content(self, key: str) -> str:
        """``contentUrl`` of an image key."""
        return f"{self.images}/img/{quote(key, safe='/.-_~')}"

    def thumbnail(self, key: str) -> str:
        """``thumbnailUrl`` of an image key (served by the emulator's /th route)."""
        return f"{self.api}/th?id=OIP.{_b64(key)}&pid=Api"

    def query_thumbnail(self, text: str) -> str:
        """Thumbnail URL of a Query object."""
        return f"{self.api}/th?q={quote_plus(text)}&pid=Api"

    def search(self, text: str) -> str:
        """``searchLink`` / ``serviceUrl``: the emulator's own /images/search for ``text``."""
        return f"{self.api}{self.prefix}/v7.0/images/search?q={quote_plus(text)}"


def web_search_url(text: str, form: str = "IRPATC") -> str:
    """A bing.com results-page URL (for display only; never fetched)."""
    return f"https://www.bing.com/images/search?q={quote_plus(text)}&FORM={form}"


def image_id(key: str) -> str:
    """The 40-hex-digit ``imageId`` of an image key."""
    return hashlib.sha1(key.encode(), usedforsecurity=False).hexdigest().upper()


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _unb64(text: str) -> str | None:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None


def _digest_int(*parts: object) -> int:
    h = hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=8)
    return int.from_bytes(h.digest(), "big")


def spec_token(key: str) -> str:
    """The ``imageInsightsToken`` of an image key."""
    tag = _digest_int("ccid", key)
    return f"ccid_{tag:016x}"[:13] + f"*mid_{image_id(key)}*ek_{_b64(key)}"


def digest_token(digest: bytes) -> str:
    """The insights token of an uploaded image (or unknown URL) with this sha256 digest."""
    return f"bcid_{digest.hex().upper()}"


@dataclass(frozen=True, slots=True)
class TokenRef:
    """What an insights token refers to: an image key, or a digest of something else."""

    key: str | None = None
    digest: bytes | None = None


def decode_token(token: str) -> TokenRef | None:
    """Decode an emulator insights token; ``None`` if it is not one."""
    if token.startswith("bcid_"):
        try:
            digest = bytes.fromhex(token[5:])
        except ValueError:
            return None
        return TokenRef(digest=digest) if len(digest) == 32 else None
    for part in token.split("*"):
        if part.startswith("ek_"):
            key = _unb64(part[3:])
            return TokenRef(key=key) if key else None
    return None


def thumbnail_size(width: int, height: int) -> tuple[int, int]:
    """Bing-style thumbnail dimensions: the long side scaled to 474 px at most."""
    scale = min(1.0, _THUMB_SIDE / max(width, height, 1))
    return max(1, round(width * scale)), max(1, round(height * scale))


def display_url(url: str) -> str:
    """``hostPageDisplayUrl``: the URL without its scheme."""
    parts = urlsplit(url)
    return parts.netloc + parts.path + (f"?{parts.query}" if parts.query else "")


def image_json(spec: ImageSpec, links: Links, *, query: str, size: int) -> JSON:
    """The reference's Image object for one corpus image; ``size`` is its ``contentSize``.

    Like Bing's own figure (measured when its crawler saw the file), the corpus's size
    estimate is close to, not equal to, what a download returns.
    """
    iid = image_id(spec.key)
    h = _digest_int("meta", spec.key)
    tw, th = thumbnail_size(spec.width, spec.height)
    return {
        "webSearchUrl": (
            "https://www.bing.com/images/search?view=detailv2&FORM=OIIRPO"
            f"&q={quote_plus(query)}&id={iid}&simid={h % 10**18}"
        ),
        "name": spec.name,
        "thumbnailUrl": links.thumbnail(spec.key),
        "datePublished": spec.date_published,
        "isFamilyFriendly": True,
        "contentUrl": links.content(spec.key),
        "hostPageUrl": spec.host_page_url,
        "contentSize": f"{size} B",
        "encodingFormat": spec.format,
        "hostPageDisplayUrl": display_url(spec.host_page_url),
        "width": spec.width,
        "height": spec.height,
        "thumbnail": {"width": tw, "height": th},
        "imageInsightsToken": spec_token(spec.key),
        "insightsMetadata": {
            "pagesIncludingCount": 1 + h % 40,
            "availableSizesCount": 1 + (h >> 8) % 12,
        },
        "imageId": iid,
        "accentColor": spec.color.upper(),
    }


def query_json(
    text: str, display: str, links: Links, *, thumbnail_field: str = "thumbnailUrl"
) -> JSON:
    """The reference's Query object (text, displayText, webSearchUrl, searchLink, thumbnail)."""
    return {
        "text": text,
        "displayText": display,
        "webSearchUrl": web_search_url(text),
        "searchLink": links.search(text),
        "thumbnail": {thumbnail_field: links.query_thumbnail(text)},
    }
