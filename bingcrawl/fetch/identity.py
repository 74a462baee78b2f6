"""Who the crawler says it is: the honest User-Agent of image downloads.

``bingcrawl/<version> (+<contact>)``: the product token ``bingcrawl`` (the agent matched in
robots.txt and ``X-Robots-Tag``, :data:`bingcrawl.fetch.etiquette.AGENT`), the version, and
how a host's operator can reach whoever runs the crawl (``--contact``), else the project's
page. A browser's User-Agent would get past hosts that refuse robots; it would also hide from
them who is fetching, which is what this crawler does not do.
"""

from __future__ import annotations

import importlib.metadata
from typing import Final

__all__ = ["PROJECT_URL", "user_agent"]

#: Where a User-Agent without ``--contact`` points: the project's page.
PROJECT_URL: Final = "https://pypi.org/project/bingcrawl/"


def _version() -> str:
    try:
        return importlib.metadata.version("bingcrawl")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree, not installed
        return "0"


def user_agent(contact: str | None = None) -> str:
    """``bingcrawl/<version> (+<contact>)``; the project's page when no contact (a URL or an
    e-mail address) is given."""
    return f"bingcrawl/{_version()} (+{contact or PROJECT_URL})"
