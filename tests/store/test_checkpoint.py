"""Checkpoint behaviour: fingerprints, queries, pages, outcomes, resume reads, lifecycle."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bingcrawl.errors import CheckpointError, ResumeMismatchError
from bingcrawl.records import Candidate, ErrorClass, Outcome, Source, Status
from bingcrawl.store import CHECKPOINT_NAME, Checkpoint, url_key
from tests.support.store import make_candidates, mark_inflight_legacy, sql, stored_outcome

ODD_STRINGS = [
    "'); DROP TABLE queries;--",
    'Robert"); DROP TABLE candidates; --',
    "100% _wild_ %s {} ? :name $1",
    "newline\nand\ttab\rcr",
    "ünïcödé 猫 🐈‍⬛",
    "\u202eright-to-left override",
    "a\x00b",
    "x" * 5000,
]

# ---------------------------------------------------------------- fingerprint


async def test_fingerprint_stored_then_accepted(out: Path) -> None:
    fp = {"license": "Public", "queries": ("cat", "dog"), "limit": 100}
    async with await Checkpoint.open(out) as cp:
        await cp.check_fingerprint(fp)
        assert await cp.fingerprint() == {
            "license": "Public",
            "queries": ["cat", "dog"],
            "limit": 100,
        }
    async with await Checkpoint.open(out) as cp:
        await cp.check_fingerprint(dict(fp))  # same options: resumes


async def test_fingerprint_difference_is_refused_with_details(out: Path) -> None:
    async with await Checkpoint.open(out) as cp:
        await cp.check_fingerprint({"license": "Public", "size": "Large"})
    async with await Checkpoint.open(out) as cp:
        with pytest.raises(ResumeMismatchError) as info:
            await cp.check_fingerprint({"license": "Any", "color": "Red"})
        assert info.value.differences == {
            "color": (None, "Red"),
            "license": ("Public", "Any"),
            "size": ("Large", None),
        }
        assert info.value.exit_code == 2
        # Refusing changed nothing: the old fingerprint still stands.
        assert await cp.fingerprint() == {"license": "Public", "size": "Large"}


async def test_fresh_wipes_rows_and_moves_files_aside(out: Path) -> None:
    async with await Checkpoint.open(out, batch_interval=0.01) as cp:
        await cp.check_fingerprint({"license": "Public"})
        q = await cp.upsert_query(source="search", label="cat", text="cat", norm="cat")
        new = await cp.record_page(
            q.id, offset=0, next_offset=3, exhausted=False, candidates=make_candidates(3)
        )
        cp.record_outcome(stored_outcome(out, new[0], b"old image"))
        cp.record_api_call("images/search", 200)
        await cp.flush()
    (out / "manifest.jsonl").write_text("{}\n")
    old_image = next((out / "images").rglob("*.jpg"))
    rel = old_image.relative_to(out)

    async with await Checkpoint.open(out) as cp:
        await cp.check_fingerprint({"license": "Any"}, fresh=True)
        assert cp.api_calls_total == 0
        assert await cp.queries() == []
        assert await cp.stored_hashes() == []
        assert await cp.fingerprint() == {"license": "Any"}
        assert (await cp.status_summary()).api_calls_total == 0
    assert not (out / "images").exists()
    assert not (out / "manifest.jsonl").exists()
    (moved,) = out.glob("replaced-*")
    assert (moved / rel).read_bytes() == b"old image"
    assert (moved / "manifest.jsonl").read_text() == "{}\n"


async def test_fresh_on_a_new_out_moves_nothing(out: Path) -> None:
    (out / "images").mkdir(parents=True)  # an empty images/ is nothing to keep
    async with await Checkpoint.open(out) as cp:
        await cp.check_fingerprint({"license": "Any"}, fresh=True)
    assert not list(out.glob("replaced-*"))
    assert (out / "images").is_dir()


# ---------------------------------------------------------------- queries


async def test_upsert_query_inserts_once_and_links_roots(cp: Checkpoint) -> None:
    root = await cp.upsert_query(
        source="search", label="cat", text="Cat", norm="cat", params={"license": "Public"}
    )
    again = await cp.upsert_query(source="search", label="cat", text="CAT ", norm="cat")
    assert again == root
    assert (root.root_id, root.parent_id, root.depth) == (root.id, None, 0)
    assert root.params == {"license": "Public"}
    assert (root.next_offset, root.state, root.pages, root.results) == (0, "active", 0, 0)
    child = await cp.upsert_query(
        source=Source.EXPAND,
        label="cat",
        text="cat toy",
        norm="cat toy",
        parent_id=root.id,
        depth=1,
    )
    grandchild = await cp.upsert_query(
        source="expand",
        label="cat",
        text="cat toy red",
        norm="cat toy red",
        parent_id=child.id,
        depth=2,
    )
    assert (child.root_id, grandchild.root_id) == (root.id, root.id)
    # The same text from another source or label is another query.
    other = await cp.upsert_query(source="similar", label="cat", text="Cat", norm="cat")
    assert other.id not in (root.id, child.id)
    assert [q.id for q in await cp.queries()] == sorted(
        [root.id, child.id, grandchild.id, other.id]
    )


async def test_query_validation(cp: Checkpoint) -> None:
    with pytest.raises(ValueError, match="not a valid Source"):
        await cp.upsert_query(source="web", label="x", text="x", norm="x")
    with pytest.raises(CheckpointError, match="upsert_query failed"):
        await cp.upsert_query(source="search", label="x", text="x", norm="x", parent_id=999)
    q = await cp.upsert_query(source="search", label="x", text="x", norm="x")
    with pytest.raises(ValueError, match="unknown query state"):
        await cp.set_query_state(q.id, "finished")
    with pytest.raises(CheckpointError, match="unknown query id"):
        await cp.set_query_state(q.id + 100, "done")
    await cp.set_query_state(q.id, "failed", "quota")
    (row,) = await cp.queries()
    assert (row.state, row.error) == ("failed", "quota")


@pytest.mark.parametrize("text", ODD_STRINGS)
async def test_odd_strings_round_trip(cp: Checkpoint, out: Path, text: str) -> None:
    q = await cp.upsert_query(source="search", label=text, text=text, norm=text, params={"q": text})
    (new,) = await cp.record_page(
        q.id,
        offset=0,
        next_offset=1,
        exhausted=False,
        candidates=[Candidate(url="https://a.example/" + text, label=text, query=text, name=text)],
    )
    (back,) = await cp.queries()
    assert (back.text, back.label, back.norm, back.params) == (text, text, text, {"q": text})
    (pending,) = [c async for c in cp.iter_pending()]
    assert pending == new
    assert (pending.query, pending.label, pending.name) == (text, text, text)
    tables = {n for (n,) in sql(out, "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"queries", "candidates"} <= tables
    assert (await cp.status_summary()).queries[0].text == text


# ---------------------------------------------------------------- pages


async def test_record_page_returns_new_candidates_and_advances(cp: Checkpoint) -> None:
    q = await cp.upsert_query(source="search", label="cat", text="cat", norm="cat")
    page = make_candidates(5)
    new = await cp.record_page(q.id, offset=0, next_offset=5, exhausted=False, candidates=page)
    assert [c.url for c in new] == [c.url for c in page]
    assert all(c.query_id == q.id for c in new)
    assert [c.id for c in new] == sorted({c.id for c in new})
    assert new[0].id > 0
    assert [replace(c, id=0, query_id=0) for c in new] == page

    # An overlapping page: only URLs not seen before come back (scheme/host case and
    # default port and fragment do not make a URL new).
    overlap = [
        replace(
            page[3],
            url=page[3].url.replace("https://img.example.com", "HTTPS://IMG.Example.COM:443"),
        ),
        replace(page[4], url=page[4].url + "#frag"),
        *make_candidates(2, start=5),
    ]
    newer = await cp.record_page(q.id, offset=5, next_offset=7, exhausted=True, candidates=overlap)
    assert [c.url for c in newer] == [c.url for c in overlap[2:]]
    (row,) = await cp.queries()
    assert (row.next_offset, row.pages, row.results, row.state) == (7, 2, 9, "exhausted")


async def test_url_known_from_another_query_is_not_inserted_again(cp: Checkpoint) -> None:
    cat = await cp.upsert_query(source="search", label="cat", text="cat", norm="cat")
    kitten = await cp.upsert_query(source="search", label="cat", text="kitten", norm="kitten")
    first = await cp.record_page(
        cat.id, offset=0, next_offset=3, exhausted=False, candidates=make_candidates(3)
    )
    second = await cp.add_candidates(
        make_candidates(4, label="cat", query="kitten"), query_id=kitten.id
    )
    assert len(first) == 3
    assert [c.url for c in second] == ["https://img.example.com/a/3.jpg"]
    counts = (await cp.status_summary()).queries
    assert [q.counts.get("pending", 0) for q in counts] == [3, 1]


async def test_duplicate_urls_within_one_page(cp: Checkpoint) -> None:
    q = await cp.upsert_query(source="search", label="cat", text="cat", norm="cat")
    (c,) = make_candidates(1)
    new = await cp.record_page(q.id, offset=0, next_offset=3, exhausted=False, candidates=[c, c, c])
    assert len(new) == 1


async def test_failed_page_leaves_nothing_behind(cp: Checkpoint, out: Path) -> None:
    # Inject a failure in the middle of the page's transaction: the candidates are inserted
    # first, then the page row trips a trigger.
    q = await cp.upsert_query(source="search", label="cat", text="cat", norm="cat")
    await cp.record_page(
        q.id, offset=0, next_offset=3, exhausted=False, candidates=make_candidates(3)
    )
    conn = sqlite3.connect(out / CHECKPOINT_NAME)
    conn.execute(
        'CREATE TRIGGER fail_page BEFORE INSERT ON pages WHEN NEW."offset" = 3 '
        "BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
    )
    conn.commit()
    conn.close()

    other = await cp.upsert_query(source="search", label="dog", text="dog", norm="dog")
    bad = cp.record_page(
        q.id, offset=3, next_offset=6, exhausted=True, candidates=make_candidates(3, start=3)
    )
    good = cp.record_page(
        other.id,
        offset=0,
        next_offset=2,
        exhausted=False,
        candidates=make_candidates(2, prefix="dog", label="dog"),
    )
    results = await asyncio.gather(bad, good, return_exceptions=True)
    assert isinstance(results[0], CheckpointError)
    assert "injected failure" in str(results[0])
    assert isinstance(results[1], list)
    assert len(results[1]) == 2  # the same batch still committed

    (row,) = [r for r in await cp.queries() if r.id == q.id]
    assert (row.next_offset, row.pages, row.results, row.state) == (3, 1, 3, "active")
    assert sql(out, 'SELECT "offset" FROM pages WHERE query_id = ?', (q.id,)) == [(0,)]
    urls = {u for (u,) in sql(out, "SELECT url FROM candidates WHERE query_id = ?", (q.id,))}
    assert urls == {f"https://img.example.com/a/{i}.jpg" for i in range(3)}


async def test_record_page_unknown_query_is_refused(cp: Checkpoint, out: Path) -> None:
    with pytest.raises(CheckpointError):
        await cp.record_page(
            42, offset=0, next_offset=1, exhausted=False, candidates=make_candidates(1)
        )
    assert sql(out, "SELECT count(*) FROM candidates") == [(0,)]


# ---------------------------------------------------------------- outcomes


async def test_outcomes_are_batched_and_visible_after_flush(out: Path) -> None:
    # A long batch interval: outcomes wait in the writer until flush() asks for a commit.
    async with await Checkpoint.open(out, batch_interval=60.0, batch_size=10_000) as cp:
        q = await cp.upsert_query(source="search", label="cat", text="cat", norm="cat")
        token = "ccid_WTqn9r3a*cp_74D633ADFCF41C86F407DFFCF0DEC38F*thid_OIP.WTqn9r3aKv5TLZ"
        four = [dataclasses.replace(c, insights_token=token) for c in make_candidates(4)]
        new = await cp.add_candidates(four, query_id=q.id)
        stored = stored_outcome(out, new[0], b"image bytes")
        cp.record_outcome(stored)
        cp.record_outcome(
            Outcome(new[1], Status.DUPLICATE, attempts=1, sha256="f" * 64, phash=7,
                    duplicate_of=stored.sha256, distance=3, fetched_at=1.5)
        )  # fmt: skip
        cp.record_outcome(
            Outcome(new[2], Status.FAILED, attempts=4, error_class=ErrorClass.http(404),
                    detail="Not Found " * 500)
        )  # fmt: skip
        cp.record_api_call("images/search", 200)
        assert sql(out, "SELECT count(*) FROM candidates WHERE status != 'pending'") == [(0,)]
        await cp.flush()
        rows = sql(
            out,
            "SELECT status, attempts, error_class, length(detail), sha256, path, duplicate_of, "
            "distance, fetched_at, bytes FROM candidates ORDER BY id",
        )
    assert rows[0] == (
        "stored",
        1,
        None,
        None,
        stored.sha256,
        stored.path,
        None,
        None,
        stored.fetched_at,
        11,
    )
    assert rows[1] == ("duplicate", 1, None, None, "f" * 64, None, stored.sha256, 3, 1.5, None)
    assert rows[2][:4] == ("failed", 4, "http_404", 2000)  # detail capped
    assert rows[3][0] == "pending"
    # the insights token serves only to ask about a stored image: a final duplicate or
    # failure drops it (~155 bytes of a real Bing row)
    tokens = sql(out, "SELECT insights_token FROM candidates ORDER BY id")
    assert tokens == [(token,), (None,), (None,), (token,)]


async def test_invalid_outcomes_are_refused_immediately(cp: Checkpoint) -> None:
    (c,) = make_candidates(1)
    with pytest.raises(ValueError, match="no checkpoint id"):
        cp.record_outcome(Outcome(c, Status.FAILED, error_class="timeout"))
    c = replace(c, id=1)
    with pytest.raises(ValueError, match="needs path"):
        cp.record_outcome(Outcome(c, Status.STORED, sha256="a" * 64, phash=1))
    with pytest.raises(ValueError, match="images/<label>/<file>"):
        cp.record_outcome(Outcome(c, Status.STORED, sha256="a" * 64, phash=1, path="cat/a.jpg"))
    with pytest.raises(OSError, match=r"'\.\.'"):
        cp.record_outcome(
            Outcome(c, Status.STORED, sha256="a" * 64, phash=1, path="images/../x.jpg")
        )
    with pytest.raises(ValueError, match="duplicate_of"):
        cp.record_outcome(Outcome(c, Status.DUPLICATE, sha256="a" * 64))


async def test_a_bad_row_is_isolated_and_reported_by_flush(cp: Checkpoint, out: Path) -> None:
    q = await cp.upsert_query(source="search", label="cat", text="cat", norm="cat")
    new = await cp.add_candidates(make_candidates(3), query_id=q.id)
    cp.record_outcome(Outcome(new[0], Status.FAILED, attempts=1, error_class="timeout"))
    # attempts=None violates NOT NULL: this row fails inside the writer, not at the call.
    cp.record_outcome(Outcome(new[1], Status.FAILED, attempts=None, error_class="timeout"))  # type: ignore[arg-type]
    cp.record_outcome(Outcome(new[2], Status.SKIPPED, attempts=0))
    with pytest.raises(CheckpointError, match="1 checkpoint writes failed"):
        await cp.flush()
    assert sql(out, "SELECT status FROM candidates ORDER BY id") == [
        ("failed",),
        ("pending",),
        ("skipped",),
    ]
    await cp.flush()  # the loss was reported once


async def test_api_calls_total_survives_reopen(out: Path) -> None:
    async with await Checkpoint.open(out) as cp:
        for status in (200, 200, 429, 200):
            cp.record_api_call("images/search", status)
        cp.record_api_call("images/details", 200)
        assert cp.api_calls_total == 5
    async with await Checkpoint.open(out) as cp:
        assert cp.api_calls_total == 5
        cp.record_api_call("images/search", 200)
        assert cp.api_calls_total == 6
        await cp.flush()
        summary = await cp.status_summary()
    by = {(c.endpoint, c.status): c.count for c in summary.api_calls}
    assert by == {("images/details", 200): 1, ("images/search", 200): 4, ("images/search", 429): 1}


# ---------------------------------------------------------------- resume reads


async def test_iter_pending_streams_in_batches_by_id(
    cp: Checkpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    q = await cp.upsert_query(source="search", label="cat", text="cat", norm="cat")
    new = await cp.add_candidates(make_candidates(50), query_id=q.id)
    for c in new[::3]:
        cp.record_outcome(Outcome(c, Status.FAILED, attempts=1, error_class="timeout"))
    mark_inflight_legacy(cp, [new[1].id])
    await cp.flush()
    expected = [c for i, c in enumerate(new) if i % 3 and i != 1]
    # Watch the reads: each returns at most one batch, never the whole table.
    sizes: list[int] = []
    run = cp._readers.run

    def counting_run(fn: Callable[[sqlite3.Connection], Any]) -> Any:
        result = run(fn)
        if isinstance(result, list):
            sizes.append(len(result))
        return result

    monkeypatch.setattr(cp._readers, "run", counting_run)
    seen: list[Candidate] = []
    async for c in cp.iter_pending(batch=7):
        seen.append(c)
        if len(seen) == 1:
            # Rows added during the iteration are not yielded: the caller got them already.
            await cp.add_candidates(make_candidates(5, prefix="late"), query_id=q.id)
    assert seen == expected
    assert len(expected) == 32
    assert sizes == [7, 7, 7, 7, 4, 0]  # 32 pending rows in batches of 7, then the end


async def test_iter_pending_leaves_out_the_queries_it_is_told_to(cp: Checkpoint) -> None:
    queries = [
        await cp.upsert_query(source="search", label=w, text=w, norm=w) for w in ("a", "b", "c")
    ]
    added = {
        q.id: await cp.add_candidates(make_candidates(4, prefix=q.label), query_id=q.id)
        for q in queries
    }
    a, b, c = (q.id for q in queries)
    left_out = [c_.id async for c_ in cp.iter_pending(batch=3, except_queries=[a, c])]
    assert left_out == [x.id for x in added[b]]
    everything = [c_.id async for c_ in cp.iter_pending(batch=5)]
    assert everything == sorted(x.id for rows in added.values() for x in rows)
    assert await cp.with_pending([c, a, b]) == [c, a, b]
    assert await cp.skip_pending([a]) == 4
    assert [c_.query_id async for c_ in cp.iter_pending()] == [b] * 4 + [c] * 4
    assert await cp.with_pending([c, a, b]) == [c, b]  # a has none left
    # a few rows per call: the writer commits other work in between
    assert await cp.skip_pending([b, c], at_most=3) == 3
    assert await cp.skip_pending([b, c], at_most=3) == 3
    assert await cp.skip_pending([b, c]) == 2
    assert await cp.with_pending([a, b, c]) == []


async def test_stored_hashes_and_counts(cp: Checkpoint, out: Path) -> None:
    cat = await cp.upsert_query(source="search", label="cat", text="cat", norm="cat")
    dog = await cp.upsert_query(source="search", label="dog", text="dog", norm="dog")
    cats = await cp.add_candidates(make_candidates(3), query_id=cat.id)
    dogs = await cp.add_candidates(make_candidates(2, prefix="d", label="dog"), query_id=dog.id)
    outcomes = [
        stored_outcome(out, cats[0], b"c0", phash=1),
        stored_outcome(out, cats[1], b"c1", phash=(1 << 64) - 2),
        replace(stored_outcome(out, dogs[0], b"d0", phash=1 << 63), centre=(1 << 64) - 3),
    ]
    for o in outcomes:
        cp.record_outcome(o)
    cp.record_outcome(Outcome(dogs[1], Status.FAILED, attempts=1, error_class="timeout"))
    await cp.flush()
    assert sorted(await cp.stored_hashes()) == sorted((o.sha256, o.phash) for o in outcomes)
    assert await cp.stored_counts() == {cat.id: 2, dog.id: 1}

    def consume(
        rows: Iterator[tuple[str, int, int | None]],
    ) -> tuple[bool, list[tuple[str, int, int | None]]]:
        return isinstance(rows, list), sorted(rows)

    # streamed from the cursor, not handed over as a list; centre hashes read back unsigned
    streamed = await cp.read_stored_hashes(consume)
    assert streamed == (False, sorted((o.sha256, o.phash, o.centre) for o in outcomes))


# ---------------------------------------------------------------- lifecycle


async def test_second_writer_is_refused_but_readers_are_welcome(cp: Checkpoint, out: Path) -> None:
    q = await cp.upsert_query(source="search", label="cat", text="cat", norm="cat")
    with pytest.raises(CheckpointError, match="in use by another bingcrawl process"):
        await Checkpoint.open(out)
    async with await Checkpoint.open(out, read_only=True) as ro:
        assert [r.id for r in await ro.queries()] == [q.id]
        with pytest.raises(CheckpointError, match="read-only"):
            ro.record_api_call("images/search", 200)
        with pytest.raises(CheckpointError, match="read-only"):
            await ro.upsert_query(source="search", label="x", text="x", norm="x")


async def test_close_is_idempotent_and_final(out: Path) -> None:
    cp = await Checkpoint.open(out)
    await cp.close()
    await cp.close()
    assert cp.closed
    with pytest.raises(CheckpointError, match="closed"):
        cp.record_api_call("images/search", 200)
    with pytest.raises(CheckpointError, match="closed"):
        await cp.queries()
    # The lock went with it.
    async with await Checkpoint.open(out):
        pass


async def test_cancelled_close_still_commits(out: Path) -> None:
    cp = await Checkpoint.open(out, batch_interval=60.0, batch_size=100_000)
    q = await cp.upsert_query(source="search", label="cat", text="cat", norm="cat")
    new = await cp.add_candidates(make_candidates(200), query_id=q.id)
    for c in new:
        cp.record_outcome(Outcome(c, Status.SKIPPED))
    closing = asyncio.create_task(cp.close())
    await asyncio.sleep(0)  # let close() start
    closing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await closing
    await cp.close()  # waits for the shielded close that kept going
    assert sql(out, "SELECT status, count(*) FROM candidates GROUP BY status") == [("skipped", 200)]


async def test_durable_mode_opens_with_full_sync(out: Path) -> None:
    async with await Checkpoint.open(out, durable=True) as cp:
        assert cp.durable
        q = await cp.upsert_query(source="search", label="cat", text="cat", norm="cat")
        await cp.record_page(
            q.id, offset=0, next_offset=1, exhausted=True, candidates=make_candidates(1)
        )
    assert sql(out, "SELECT count(*) FROM candidates") == [(1,)]


@pytest.mark.parametrize(
    ("url", "key"),
    [
        ("HTTP://Example.COM:80/a/B.jpg#frag", "http://example.com/a/B.jpg"),
        ("https://example.com:443", "https://example.com/"),
        ("https://example.com:8443/x?Q=1&b=2", "https://example.com:8443/x?Q=1&b=2"),
        ("http://User:Pw@Example.com:80/", "http://User:Pw@example.com/"),
        ("http://[2001:DB8::1]:80/x", "http://[2001:db8::1]/x"),
        ("http://example.com:99999/x#f", "http://example.com:99999/x"),
        ("data:image/png;base64,AAAA", "data:image/png;base64,AAAA"),
    ],
)
def test_url_key(url: str, key: str) -> None:
    assert url_key(url) == key


_HOST = st.from_regex(r"[a-z0-9]{1,10}(\.[a-z0-9]{1,10}){0,2}", fullmatch=True)
_PATH = st.from_regex(r"(/[A-Za-z0-9._~%-]{0,8}){0,4}", fullmatch=True)


@settings(max_examples=60, deadline=None)
@given(
    scheme=st.sampled_from(["http", "https"]),
    host=_HOST,
    port=st.one_of(st.none(), st.integers(min_value=1, max_value=65535)),
    path=_PATH,
    query=st.from_regex(r"(\?[A-Za-z0-9=&]{0,10})?", fullmatch=True),
    fragment=st.from_regex(r"(#[A-Za-z0-9]{0,6})?", fullmatch=True),
    flip=st.randoms(use_true_random=False),
)
def test_url_key_is_case_port_and_fragment_insensitive(
    scheme: str,
    host: str,
    port: int | None,
    path: str,
    query: str,
    fragment: str,
    flip: Any,
) -> None:
    def shout(text: str) -> str:
        return "".join(ch.upper() if flip.random() < 0.5 else ch for ch in text)

    default = {"http": 80, "https": 443}[scheme]
    netloc = host if port is None else f"{host}:{port}"
    canonical_port = "" if port in (None, default) else f":{port}"
    expected = f"{scheme}://{host}{canonical_port}{path or '/'}{query.rstrip('?')}"
    variant = f"{shout(scheme)}://{shout(netloc)}{path}{query}{fragment}"
    assert url_key(variant) == expected
    assert url_key(expected) == expected
