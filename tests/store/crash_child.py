"""Child process of test_crash: writes pages and outcomes in a loop until it is SIGKILLed.

After each ``record_page`` returns (the page is committed) it prints the page's offset, so
the parent knows which pages must survive the kill.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

from bingcrawl.records import Candidate, Outcome, Status
from bingcrawl.store import Checkpoint

LEGACY_MARK_INFLIGHT = (
    "UPDATE candidates SET status = 'inflight', updated_at = ? WHERE id = ? AND status = 'pending'"
)

PAGE = 50


def page_urls(offset: int) -> list[str]:
    """The URLs of the page at ``offset`` (the parent recomputes them)."""
    return [f"https://img.example.com/crash/{offset + i}.jpg" for i in range(PAGE)]


async def main(out: Path) -> None:
    async with await Checkpoint.open(out, batch_interval=0.005) as cp:
        await cp.check_fingerprint({"crash": True})
        await cp.recover()
        q = await cp.upsert_query(source="search", label="cat", text="cat", norm="cat")
        offset = q.next_offset
        while True:
            cands = [Candidate(url=u, label="cat", query="cat") for u in page_urls(offset)]
            new = await cp.record_page(
                q.id, offset=offset, next_offset=offset + PAGE, exhausted=False, candidates=cands
            )
            for c in new[: PAGE // 2]:
                cp.record_outcome(Outcome(c, Status.FAILED, attempts=1, error_class="timeout"))
            now = time.time()
            for c in new[PAGE // 2 :]:  # rows in flight, as bingcrawl before 0.2 marked them
                cp._w().post(LEGACY_MARK_INFLIGHT, (now, c.id))
            cp.record_api_call("images/search", 200)
            sys.stdout.write(f"{offset}\n")
            sys.stdout.flush()
            offset += PAGE


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
