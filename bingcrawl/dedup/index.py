"""Exact and near-duplicate detection: sha256 set plus a Hamming index on perceptual hashes.

:class:`DedupIndex` puts the two dedup rules together for the crawler: exact duplicates by
sha256, near duplicates by Hamming distance, first stored wins. Per stored image it holds
200-230 bytes (tracemalloc, in a crawl and after a rebuild): the Hamming index's 65 and
135-165 for the exact rule (a 65-byte digest object, its dict entry and its list slot).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Self

import numpy as np
import numpy.typing as npt

from bingcrawl.dedup.hamming import MASK64, MAX_DISTANCE, HammingIndex
from bingcrawl.errors import ConfigError

__all__ = ["MAX_DISTANCE", "REBUILD_CHUNK", "DedupIndex", "HammingIndex", "Match"]

#: Rows :meth:`DedupIndex.rebuild` decodes at a time.
REBUILD_CHUNK: Final = 65_536


@dataclass(frozen=True, slots=True)
class Match:
    """The stored image a candidate duplicates: its sha256 and the Hamming distance (0 = exact)."""

    sha256: str
    distance: int


class DedupIndex:
    """Exact (sha256) and near (perceptual-hash) duplicate detection; first stored wins.

    ``near_distance`` is the largest Hamming distance that still counts as a near duplicate;
    0 disables near-duplicate detection (exact copies only). Not thread-safe, and needs none:
    :meth:`check_and_add` is synchronous, so within one event loop it is atomic.
    """

    __slots__ = ("_digests", "_index", "_near", "_slots")

    def __init__(self, near_distance: int) -> None:
        if not 0 <= near_distance <= MAX_DISTANCE:
            raise ConfigError(
                "--near-dup-distance",
                f"must be between 0 (exact duplicates only) and {MAX_DISTANCE}, "
                f"got {near_distance}",
            )
        self._near = near_distance
        # sha256 digest (32 bytes, half the memory of the hex str) -> slot, and slot -> digest;
        # the slot is the id in the Hamming index, so "smallest id" means "stored first".
        self._slots: dict[bytes, int] = {}
        self._digests: list[bytes | None] = []
        self._index = HammingIndex(near_distance) if near_distance else None

    @classmethod
    def rebuild(cls, rows: Iterable[tuple[str, int]], near_distance: int) -> Self:
        """Rebuild from the checkpoint's stored ``(sha256, phash)`` rows (ties: the earlier row).

        A phash read back as a signed 64-bit SQLite INTEGER (negative) is taken as its two's
        complement. A repeated sha256 keeps its first row. ``rows`` is consumed in chunks of
        :data:`REBUILD_CHUNK`, decoded vectorised (about 1 s per million rows), so a caller
        can stream them from a cursor: only the index itself grows with the crawl, not a
        list of every row as well. Still O(n): a caller on an event loop runs it in a thread.
        """
        dedup = cls(near_distance)
        slots, digests = dedup._slots, dedup._digests
        parts: list[npt.NDArray[np.uint64]] = []
        source = iter(rows)
        while chunk := list(itertools.islice(source, REBUILD_CHUNK)):
            found = _digests([row[0] for row in chunk])
            unsigned = _unsigned_array([row[1] for row in chunk])  # validates them all
            kept: list[int] = []
            for i, digest in enumerate(found):
                if digest not in slots:
                    slots[digest] = len(digests)
                    digests.append(digest)
                    kept.append(i)
            parts.append(unsigned if len(kept) == len(chunk) else unsigned[kept])
        if dedup._index is not None:
            hashes = np.concatenate(parts) if parts else np.empty(0, dtype=np.uint64)
            dedup._index = HammingIndex.build(hashes, np.arange(hashes.size), near_distance)
        return dedup

    @property
    def near_distance(self) -> int:
        """The near-duplicate radius (0 = exact duplicates only)."""
        return self._near

    def __len__(self) -> int:
        return len(self._slots)

    def __contains__(self, sha256: object) -> bool:
        if not isinstance(sha256, str):
            return False
        try:
            return _digest(sha256) in self._slots
        except ValueError:
            return False

    def __repr__(self) -> str:
        return f"<DedupIndex {len(self)} images, near_distance={self._near}>"

    def check_and_add(self, sha256: str, phash: int) -> Match | None:
        """Return the stored image this one duplicates, or reserve it and return ``None``.

        Exact copies match with distance 0; otherwise the closest stored perceptual hash within
        ``near_distance`` (ties: the first stored). Release a reservation whose file could not
        be written with :meth:`discard`.
        """
        digest = _digest(sha256)
        phash = _unsigned(phash)
        if digest in self._slots:
            return Match(digest.hex(), 0)
        if self._index is not None:
            hit = self._index.nearest(phash)
            if hit is not None:
                stored = self._digests[hit[0]]
                assert stored is not None  # discarded slots are removed from the index
                return Match(stored.hex(), hit[1])
            self._index.add(phash, len(self._digests))
        self._slots[digest] = len(self._digests)
        self._digests.append(digest)
        return None

    def discard(self, sha256: str) -> bool:
        """Undo the reservation of ``sha256`` (e.g. its file write failed); False if unknown."""
        slot = self._slots.pop(_digest(sha256), None)
        if slot is None:
            return False
        self._digests[slot] = None
        if self._index is not None:
            self._index.remove(slot)
        return True


def _digest(sha256: str) -> bytes:
    try:
        digest = bytes.fromhex(sha256)
    except ValueError as exc:
        raise ValueError(f"not a sha256 hex digest: {sha256!r}") from exc
    if len(digest) != 32:
        raise ValueError(f"not a sha256 hex digest: {sha256!r}")
    return digest


def _digests(shas: list[str]) -> list[bytes]:
    """``_digest`` of every hex string, decoded in one call (the strings' lengths checked)."""
    if set(map(len, shas)) <= {64}:
        try:
            blob = bytes.fromhex("".join(shas))
        except ValueError:
            blob = b""
        if len(blob) == 32 * len(shas):
            return [blob[i : i + 32] for i in range(0, len(blob), 32)]
    return [_digest(h) for h in shas]  # raises, naming the bad string


def _unsigned_array(phashes: list[int]) -> npt.NDArray[np.uint64]:
    """The phashes as uint64, negative (signed SQLite) values as their two's complement."""
    lowest = min(phashes, default=0)
    for extreme in (lowest, max(phashes, default=0)):
        _unsigned(extreme)  # raises if out of range
    return np.array([p & MASK64 for p in phashes] if lowest < 0 else phashes, dtype=np.uint64)


def _unsigned(phash: int) -> int:
    if not -(1 << 63) <= phash <= MASK64:
        raise ValueError(f"phash must be a 64-bit int, got {phash}")
    return phash & MASK64
