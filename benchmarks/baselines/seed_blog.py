"""The seed blog post's approach, faithfully: one request at a time, a one-second sleep per page.

    python -m benchmarks.baselines.seed_blog --endpoint URL --key K --query Q --max N
                                            --out DIR --result FILE

What the post (``shared/seeds/000_*.txt``) does, with the stdlib instead of ``requests``
(same behaviour: one blocking request at a time, a new connection each): page
``v7.0/images/search`` from offset 0, sleeping one second after each page and following
``nextOffset`` until ``--max`` URLs are collected; then download every ``contentUrl`` in turn
into a file named after the URL's last path segment, cut at ``?`` and ``!``. No validation, no
dedup, no retries; an ``OSError`` skips the image, as in the post. The post's loop stops on an
offset bound; it keeps the API's default page size, so ``count`` is not sent either.

The post also sends ``license=public``, ``imageType=photo`` and ``safeSearch=Strict``;
``--post-filters`` does too. The harness leaves them out so that the sample is the same URLs
every other tool fetches (the filters change which images come back, not what each costs).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from benchmarks.measure import write_result

_PAGE_SLEEP = 1.0
_sleep = time.sleep  # tests replace it to count the sleeps


def _get(url: str, headers: dict[str, str] | None = None) -> bytes:
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=30) as response:
        body: bytes = response.read()
    return body


def collect(
    endpoint: str, key: str, query: str, want: int, *, post_filters: bool = False
) -> tuple[list[str], int]:
    """Page the search API as the post does; returns (content URLs, pages fetched)."""
    url = f"{endpoint}v7.0/images/search"
    headers = {"Ocp-Apim-Subscription-Key": key}
    params: dict[str, Any] = {"q": query}
    if post_filters:
        params.update({"license": "public", "imageType": "photo", "safeSearch": "Strict"})
    content_urls: list[str] = []
    new_offset, pages = 0, 0
    while len(content_urls) < want:
        params["offset"] = new_offset
        result = json.loads(_get(f"{url}?{urllib.parse.urlencode(params)}", headers))
        pages += 1
        _sleep(_PAGE_SLEEP)
        content_urls.extend(item["contentUrl"] for item in result.get("value", []))
        next_offset = result.get("nextOffset")
        if not result.get("value") or next_offset is None or next_offset <= new_offset:
            break
        new_offset = next_offset
    return content_urls[:want], pages


def file_name(url: str) -> str:
    """The post's cleaning: the last path segment, cut at ``?`` and ``!``."""
    last_item = url.split("/")[-1]
    last_item = last_item.split("?")[0]
    return last_item.split("!")[0]


def download(urls: list[str], dir_path: Path) -> int:
    """Download each URL in turn; returns how many files were written."""
    dir_path.mkdir(parents=True, exist_ok=True)
    written = 0
    for url in urls:
        path = os.path.join(dir_path, file_name(url))
        try:
            with open(path, "wb") as f:
                f.write(_get(url))
            written += 1
        except OSError:
            continue
    return written


def main(argv: list[str] | None = None) -> int:
    """Run the loop and write the result file."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.baselines.seed_blog")
    p.add_argument("--endpoint", required=True)
    p.add_argument("--key", default="bench-key")
    p.add_argument("--query", required=True)
    p.add_argument("--max", type=int, default=100)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--result", type=Path, required=True)
    p.add_argument("--post-filters", action="store_true", help="send the post's filters too")
    args = p.parse_args(argv)
    t0 = time.time()
    urls, pages = collect(
        args.endpoint, args.key, args.query, args.max, post_filters=args.post_filters
    )
    t_search = time.time()
    written = download(urls, args.out)
    result = {
        "urls": len(urls),
        "pages": pages,
        "written": written,
        "search_s": round(t_search - t0, 3),
        "download_s": round(time.time() - t_search, 3),
        "wall_s": round(time.time() - t0, 3),
    }
    write_result(args.result, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
