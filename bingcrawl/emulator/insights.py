"""Handlers of /images/details (ImageInsights) and /images/visualsearch (ImageKnowledge).

Both identify an image in one of three ways: an insights token from an earlier response,
an image URL, or an uploaded image (multipart/form-data, at most ``max_upload_bytes``, its
long side at most ``max_upload_side`` px). A token or URL of a corpus image resolves to that
image; anything else is reduced to a sha256 digest and answered from
``corpus.visual_results(digest, n)`` - for visual search, the digest of the uploaded bytes or
of the URL / token text, as the corpus contract says.

Modules with no data in a synthetic corpus (Collections, Recipes, RecognizedEntities,
ShoppingSources, SimilarProducts) are omitted from the answer, which the reference allows:
"if there is no data for the module, the response object doesn't include the related field".

Paging of visually similar images: the reference (seed 003) shows the VisualSearch action's
``data`` carrying ``currentOffset``, ``nextOffset`` and ``totalEstimatedMatches`` but does not
say how a request asks for the next page. Emulator extension: /images/visualsearch accepts
``offset`` and ``count`` query parameters (default 0 and 50, count <= 150) for that list.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import orjson
from aiohttp import BodyPartReader, web
from PIL import Image, UnidentifiedImageError

from bingcrawl.emulator.api import MARKET_HEADER, links_for, page
from bingcrawl.emulator.config import MAX_COUNT, EmulatorConfig
from bingcrawl.emulator.params import MODULES, enum_value, parse_locale, unsigned
from bingcrawl.emulator.shapes import (
    ApiFailure,
    Links,
    decode_token,
    digest_token,
    image_json,
    json_response,
    query_json,
    spec_token,
    web_search_url,
)
from bingcrawl.emulator.state import CONFIG, CORPUS

if TYPE_CHECKING:
    from bingcrawl.emulator.corpus import Corpus, ImageSpec

__all__ = ["details", "visual_search"]

_KNOWLEDGE_LIMIT = 64 * 1024
_DEFAULT_VISUAL_COUNT = 50
_ALL_MODULES = frozenset(MODULES) - {"All", "RecognizedEntities"}
_TERMS = (
    "landscape", "texture", "abstract art", "sky", "pattern", "nature photography", "sunset",
    "gradient", "wallpaper", "painting", "architecture", "still life",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Subject:
    """The image a request is about: a corpus image, or just a digest."""

    token: str
    digest: bytes
    spec: ImageSpec | None = None


def _sha(data: bytes | str) -> bytes:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).digest()


def _spec_from_url(corpus: Corpus, url: str) -> ImageSpec | None:
    path = urlsplit(url).path
    return corpus.spec(path[len("/img/") :]) if path.startswith("/img/") else None


def _check_url(parameter: str, url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ApiFailure.invalid(parameter, url, "an absolute http(s) URL")


def _subject_from_token(corpus: Corpus, parameter: str, token: str) -> Subject:
    ref = decode_token(token)
    if ref is not None and ref.digest is not None:
        return Subject(token=token, digest=ref.digest)
    spec = corpus.spec(ref.key) if ref is not None and ref.key else None
    if spec is None:
        raise ApiFailure.invalid(parameter, token, "not an insights token this service issued")
    return Subject(token=token, digest=_sha(token), spec=spec)


async def _read_part(part: BodyPartReader, limit: int, parameter: str) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while chunk := await part.read_chunk():
        size += len(chunk)
        if size > limit:
            raise ApiFailure.invalid(
                parameter, f"more than {limit} bytes", f"at most {limit} bytes"
            )
        chunks.append(chunk)
    return b"".join(chunks)


def _check_image(data: bytes, config: EmulatorConfig) -> None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:  # reads the header only
                width, height = img.size
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError):
        raise ApiFailure.invalid("image", f"{len(data)} bytes", "not a decodable image") from None
    side = config.max_upload_side
    if side is not None and max(width, height) > side:
        raise ApiFailure.invalid(
            "image", f"{width}x{height}", f"the longest side must be at most {side} px"
        )


async def _read_form(request: web.Request, config: EmulatorConfig) -> dict[str, bytes]:
    """The parts of a multipart/form-data body, by name (sizes checked as they stream)."""
    if request.content_type != "multipart/form-data":
        raise ApiFailure.invalid(
            "Content-Type", request.content_type, "multipart/form-data is required"
        )
    parts: dict[str, bytes] = {}
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                raise ApiFailure.invalid("Content-Type", "nested multipart", "one level of parts")
            name = part.name or ""
            if name == "image":
                parts[name] = await _read_part(part, config.max_upload_bytes, "image")
            elif name == "knowledgeRequest":
                parts[name] = await _read_part(part, _KNOWLEDGE_LIMIT, "knowledgeRequest")
            else:
                await part.release()
    except ValueError as exc:  # a malformed multipart body
        raise ApiFailure.invalid("Content-Type", "multipart/form-data", str(exc)) from None
    if "image" in parts:
        _check_image(parts["image"], config)
    return parts


def _modules(raw: str | None) -> frozenset[str]:
    if raw is None:
        return _ALL_MODULES
    names: set[str] = set()
    for item in raw.split(","):
        value = enum_value({"modules": item}, "modules", MODULES)
        if value == "All":
            names |= _ALL_MODULES
        elif value is not None:
            names.add(value)
    return frozenset(names)


def _check_crop_params(query: Any) -> None:
    for name in ("cal", "cat", "car", "cab"):
        raw = query.get(name)
        if raw is None:
            continue
        try:
            value = float(raw)
        except ValueError:
            value = -1.0
        if not 0.0 <= value <= 1.0:
            raise ApiFailure.invalid(name, raw, "a fraction from 0.0 to 1.0")
    ct = query.get("ct")
    if ct is not None and ct.strip() != "0":
        raise ApiFailure.invalid("ct", ct, "0 (rectangular)")


async def _pages_including(
    corpus: Corpus, subject: Subject, config: EmulatorConfig
) -> list[ImageSpec]:
    spec = subject.spec
    if spec is None:
        return []
    similar = await asyncio.to_thread(corpus.similar, spec, config.similar_results)
    same = [s for s in similar if s.base == spec.base and s.key != spec.key]
    return [spec, *same[:9]]


async def _similar(corpus: Corpus, subject: Subject, n: int) -> Sequence[ImageSpec]:
    # Building result lists costs tens of ms: off the loop, like the image host's rendering.
    if subject.spec is not None:
        return await asyncio.to_thread(corpus.similar, subject.spec, n)
    return await asyncio.to_thread(corpus.visual_results, subject.digest, n)


def _subject_text(subject: Subject) -> str:
    if subject.spec is not None:
        return subject.spec.name
    return _TERMS[subject.digest[0] % len(_TERMS)]


def _related(text: str, links: Links, subject: Subject) -> list[dict[str, Any]]:
    start = subject.digest[1] % len(_TERMS)
    terms = [f"{text} {_TERMS[(start + i) % len(_TERMS)]}" for i in range(4)]
    return [query_json(t, t, links, thumbnail_field="url") for t in terms]


async def details(request: web.Request) -> web.Response:
    """GET or POST /v7.0/images/details: ImageInsights for a token, a URL or an upload."""
    config, corpus = request.app[CONFIG], request.app[CORPUS]
    query = request.query
    market = parse_locale(query, request.headers)
    modules = _modules(query.get("modules"))
    _check_crop_params(query)
    token, img_url = query.get("insightsToken"), query.get("imgUrl")
    upload = (await _read_form(request, config)).get("image") if request.method == "POST" else None
    given = [name for name, v in (("insightsToken", token), ("imgUrl", img_url)) if v]
    if len(given) == 2 or (given and upload is not None):
        raise ApiFailure.invalid(
            given[-1], query[given[-1]], "give one of insightsToken, imgUrl or an image"
        )
    if token:
        subject = _subject_from_token(corpus, "insightsToken", token)
    elif img_url:
        _check_url("imgUrl", img_url)
        spec = _spec_from_url(corpus, img_url)
        subject = (
            Subject(token=spec_token(spec.key), digest=_sha(img_url), spec=spec)
            if spec is not None
            else Subject(token=digest_token(_sha(img_url)), digest=_sha(img_url))
        )
    elif upload is not None:
        subject = Subject(token=digest_token(_sha(upload)), digest=_sha(upload))
    else:
        raise ApiFailure.missing("insightsToken")

    links = links_for(request)
    text = query.get("q") or _subject_text(subject)
    body: dict[str, Any] = {"_type": "ImageInsights", "imageInsightsToken": subject.token}
    if "BRQ" in modules:
        body["bestRepresentativeQuery"] = query_json(text, text, links)
    if "Caption" in modules and subject.spec is not None:
        body["imageCaption"] = {
            "caption": subject.spec.name,
            "dataSourceUrl": subject.spec.host_page_url,
            "relatedSearches": _related(text, links, subject)[:2],
        }
    if "PagesIncluding" in modules:
        pages = await _pages_including(corpus, subject, config)
        body["pagesIncluding"] = {
            "value": [image_json(s, links, query=text, size=corpus.approx_size(s)) for s in pages]
        }
    if "RelatedSearches" in modules and query.get("q"):
        body["relatedSearches"] = {"value": _related(text, links, subject)}
    if "SimilarImages" in modules:
        similar = await _similar(corpus, subject, config.details_similar_count)
        body["visuallySimilarImages"] = {
            "value": [image_json(s, links, query=text, size=corpus.approx_size(s)) for s in similar]
        }
    if "Tags" in modules:
        tags = [subject.spec.image_type] if subject.spec is not None else []
        tags += [w for w in _subject_text(subject).split() if w.isalpha()][:4]
        body["imageTags"] = {"value": [{"name": t} for t in dict.fromkeys(tags)]}
    response = json_response(body)
    response.headers[MARKET_HEADER] = market
    return response


@dataclass(frozen=True, slots=True)
class KnowledgeRequest:
    """The parts of a visual search ``knowledgeRequest`` the emulator acts on."""

    url: str | None = None
    token: str | None = None
    crop: tuple[float, float, float, float] | None = None  # top, left, bottom, right
    site: str | None = None
    skills: frozenset[str] | None = None


def _bad(field: str, detail: str) -> ApiFailure:
    return ApiFailure.invalid("knowledgeRequest", field, detail)


def parse_knowledge_request(raw: bytes) -> KnowledgeRequest:
    """Validate the ``knowledgeRequest`` JSON part of a visual search request."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise _bad("knowledgeRequest", "not valid JSON") from None
    if not isinstance(obj, dict):
        raise _bad("knowledgeRequest", "must be a JSON object")
    info = obj.get("imageInfo", {})
    if not isinstance(info, dict):
        raise _bad("imageInfo", "must be an object")
    url, token = info.get("url"), info.get("imageInsightsToken")
    for name, value in (("imageInfo.url", url), ("imageInfo.imageInsightsToken", token)):
        if value is not None and (not isinstance(value, str) or not value):
            raise _bad(name, "must be a non-empty string")
    if url and token:
        raise _bad("imageInfo", "give either url or imageInsightsToken, not both")
    if url:
        _check_url("knowledgeRequest", url)
    crop: tuple[float, float, float, float] | None = None
    if "cropArea" in info:
        area = info["cropArea"]
        try:
            top, left, bottom, right = (float(area[k]) for k in ("top", "left", "bottom", "right"))
        except (TypeError, KeyError, ValueError):
            raise _bad("imageInfo.cropArea", "needs numeric top, left, bottom, right") from None
        if not (0 <= top < bottom <= 1 and 0 <= left < right <= 1):
            raise _bad("imageInfo.cropArea", "fractions 0..1 with top < bottom, left < right")
        crop = (top, left, bottom, right)
    knowledge = obj.get("knowledgeRequest", {})
    if not isinstance(knowledge, dict):
        raise _bad("knowledgeRequest.knowledgeRequest", "must be an object")
    filters = knowledge.get("filters", {})
    site = filters.get("site") if isinstance(filters, dict) else None
    if site is not None and not isinstance(site, str):
        raise _bad("knowledgeRequest.filters.site", "must be a string")
    skills = knowledge.get("invokedSkills")
    if skills is not None and (
        not isinstance(skills, list) or not all(isinstance(s, str) for s in skills)
    ):
        raise _bad("knowledgeRequest.invokedSkills", "must be a list of strings")
    return KnowledgeRequest(
        url=url or None,
        token=token or None,
        crop=crop,
        site=site.strip().lower() or None if site else None,
        skills=frozenset(s.casefold() for s in skills) if skills is not None else None,
    )


def _on_site(spec: ImageSpec, site: str) -> bool:
    host = (urlsplit(spec.host_page_url).hostname or "").lower()
    return host == site or host.endswith("." + site)


def _box(digest: bytes) -> dict[str, Any]:
    left, top = digest[2] / 512, digest[3] / 512
    right, bottom = left + 0.3 + digest[4] / 1024, top + 0.3 + digest[5] / 1024
    rect = {
        "topLeft": {"x": left, "y": top},
        "topRight": {"x": right, "y": top},
        "bottomRight": {"x": right, "y": bottom},
        "bottomLeft": {"x": left, "y": bottom},
    }
    cx, cy = (left + right) / 2, (top + bottom) / 2
    point = {"x": cx, "y": cy}
    centre = {"topLeft": point, "topRight": point, "bottomRight": point, "bottomLeft": point}
    return {"queryRectangle": rect, "displayRectangle": centre}


async def visual_search(request: web.Request) -> web.Response:
    """POST /v7.0/images/visualsearch: ImageKnowledge for a token, a URL or an upload."""
    config, corpus = request.app[CONFIG], request.app[CORPUS]
    market = parse_locale(request.query, request.headers)
    offset = unsigned(request.query, "offset") or 0
    count = unsigned(request.query, "count")
    if count is not None and not 1 <= count <= MAX_COUNT:
        raise ApiFailure.invalid("count", count, f"an integer from 1 to {MAX_COUNT}")
    form = await _read_form(request, config)
    kr = parse_knowledge_request(form["knowledgeRequest"]) if "knowledgeRequest" in form else None
    upload = form.get("image")
    if kr is not None and (kr.url or kr.token) and upload is not None:
        raise _bad("imageInfo", "give either an image part or imageInfo.url / token, not both")
    if upload is not None:
        subject = Subject(token=digest_token(_sha(upload)), digest=_sha(upload))
    elif kr is not None and kr.token:
        subject = _subject_from_token(corpus, "knowledgeRequest", kr.token)
    elif kr is not None and kr.url:
        spec = _spec_from_url(corpus, kr.url)
        token = spec_token(spec.key) if spec is not None else digest_token(_sha(kr.url))
        subject = Subject(token=token, digest=_sha(kr.url), spec=spec)
    else:
        raise ApiFailure.missing("image")
    digest = subject.digest
    if kr is not None and kr.crop is not None:
        digest = _sha(digest + repr(kr.crop).encode())

    pool = await asyncio.to_thread(corpus.visual_results, digest, config.similar_results)
    if kr is not None and kr.site:
        site = kr.site
        pool = [s for s in pool if _on_site(s, site)]
    value, next_offset, estimate = page(
        pool, offset=offset, count=count or _DEFAULT_VISUAL_COUNT, overlap=0, salt=digest.hex()
    )
    links = links_for(request)
    text = _subject_text(subject)

    pages = await _pages_including(corpus, subject, config)

    def img(spec: ImageSpec) -> dict[str, Any]:
        return image_json(spec, links, query=text, size=corpus.approx_size(spec))

    actions: list[tuple[str, dict[str, Any]]] = [
        (
            "pagesincluding",
            {
                "_type": "ImageModuleAction",
                "actionType": "PagesIncluding",
                "data": {"value": [img(s) for s in pages]},
            },
        ),
        (
            "similarimages",
            {
                "_type": "ImageModuleAction",
                "actionType": "VisualSearch",
                "data": {
                    "value": [img(s) for s in value],
                    "currentOffset": offset,
                    "nextOffset": next_offset,
                    "totalEstimatedMatches": estimate,
                },
            },
        ),
    ]
    if subject.spec is not None:
        actions.append(("imagebyid", {"image": img(subject.spec), "actionType": "ImageById"}))
    actions += [
        (
            "relatedsearches",
            {
                "_type": "ImageRelatedSearchesAction",
                "actionType": "RelatedSearches",
                "data": {"value": _related(text, links, subject)},
            },
        ),
        (
            "bestrepresentativequery",
            {
                "webSearchUrl": web_search_url(text),
                "displayName": text,
                "serviceUrl": links.search(text),
                "actionType": "BestRepresentativeQuery",
            },
        ),
    ]
    # invokedSkills narrows the default tag; "VisualSearch" and "SimilarImages" both name
    # the similar-images action.
    skills = kr.skills if kr is not None else None
    if skills is not None:
        skills = skills | ({"similarimages"} if "visualsearch" in skills else set())
    default = [a for name, a in actions if skills is None or name in skills]
    tags: list[dict[str, Any]] = [{"displayName": "", "actions": default}]
    for i in range(2):
        term = _TERMS[(digest[6] + 5 * i) % len(_TERMS)]
        tags.append(
            {
                "image": {"thumbnailUrl": links.query_thumbnail(term)},
                "displayName": term,
                "boundingBox": _box(digest[i:]),
                "actions": [
                    {
                        "webSearchUrl": web_search_url(term),
                        "displayName": term,
                        "serviceUrl": links.search(term),
                        "actionType": "ImageResults",
                    }
                ],
            }
        )
    body = {
        "_type": "ImageKnowledge",
        "instrumentation": {"_type": "ResponseInstrumentation"},
        "tags": tags,
        "image": {"imageInsightsToken": subject.token},
    }
    response = json_response(body)
    response.headers[MARKET_HEADER] = market
    return response
