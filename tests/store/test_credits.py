"""Credit lines where the provider gave none (Bing), and Markdown that a title cannot break."""

from __future__ import annotations

from bingcrawl.store.credits import _md, credit_line


def test_a_credit_is_built_from_what_is_known() -> None:
    row = {"name": "Red  panda\nwallpaper", "license": "Public", "attribution": None}
    assert credit_line(row) == '"Red panda wallpaper" license: Public'
    row = {"name": None, "creator": "Ann", "license": "by 4.0", "license_url": "https://x/"}
    assert credit_line(row) == '"Untitled" by Ann license: by 4.0 (https://x/)'
    assert credit_line({"name": "t"}) == '"t" license: unknown'
    given = {"name": "t", "attribution": '"t" by Ann is licensed under CC BY 4.0.'}
    assert credit_line(given) == given["attribution"]


def test_markdown_specials_in_a_title_are_escaped() -> None:
    assert _md("a *bold* [link](x) | <b>") == r"a \*bold\* \[link\](x) \| \<b\>"
