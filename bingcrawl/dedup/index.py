"""Exact and near-duplicate detection: sha256 set plus Hamming indexes on perceptual hashes.

:class:`DedupIndex` puts the dedup rules together for the crawler: exact duplicates by
sha256, near duplicates by Hamming distance, first stored wins.

A picture has one or two perceptual hashes (:mod:`bingcrawl.imaging.hashing`): ``phash``,
of the picture with its flat borders trimmed (the *frame*), and with the ``regions`` method
``centre``, of its centre. Each has its own index, queried within ``near_distance``; a hit
of one is a duplicate only if the other hash confirms it:

* a frame hit needs the centres within :data:`CENTRE_CONFIRM` bits (a look-alike's frame
  can come close; its centre rarely does as well);
* a centre hit needs the frames within :data:`FRAME_CONFIRM` bits: a copy whose corner
  logo or caption bar moved its frame hash a little, never a different picture that
  happens to share a smooth middle.

Where a centre hash is missing (small pictures, the ``whole`` method, seed images) the
frame hit stands alone: with no centre hashes at all this is the rule of the ``whole``
method. Both confirm radii were chosen by measurement (``python -m benchmarks.threshold``,
README "Near duplicates"). The two indexes cost two queries per new picture.

Per stored image it holds 200-230 bytes for the exact rule and one hash (tracemalloc, in a
crawl and after a rebuild): a Hamming index's 65 and 135-165 for the exact rule (a 65-byte
digest object, its dict entry and its list slot); a centre hash adds about 65 (its index)
and every image 17 (its two hashes and a flag, kept to confirm hits).
"""

from __future__ import annotations

import itertools
from array import array
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Self

import numpy as np
import numpy.typing as npt

from bingcrawl.dedup.hamming import MASK64, MAX_DISTANCE, HammingIndex
from bingcrawl.errors import ConfigError

__all__ = [
    "CENTRE_CONFIRM",
    "FRAME_CONFIRM",
    "MAX_DISTANCE",
    "REBUILD_CHUNK",
    "DedupIndex",
    "HammingIndex",
    "Match",
    "near_match",
]

#: Rows :meth:`DedupIndex.rebuild` decodes at a time.
REBUILD_CHUNK: Final = 65_536

#: A frame hash hit is a duplicate only if the centre hashes (where both exist) are within
#: this many bits.
CENTRE_CONFIRM: Final = 20
#: A centre hash hit is a duplicate only if the frame hashes are within this many bits.
FRAME_CONFIRM: Final = 24


def near_match(
    frame_distance: npt.ArrayLike,
    centre_distance: npt.ArrayLike,
    both_centres: npt.ArrayLike,
    radius: int,
) -> npt.NDArray[np.bool_]:
    """Whether pairs of pictures are near duplicates by the rule :class:`DedupIndex` applies
    (vectorised, for measuring it on every pair of a set): the Hamming distances of their
    frame and centre hashes, and whether both have a centre hash."""
    frame = np.asarray(frame_distance)
    centre = np.asarray(centre_distance)
    both = np.asarray(both_centres, dtype=bool)
    frame_hit = (frame <= radius) & (~both | (centre <= CENTRE_CONFIRM))
    centre_hit = both & (centre <= radius) & (frame <= FRAME_CONFIRM)
    result: npt.NDArray[np.bool_] = frame_hit | centre_hit
    return result


@dataclass(frozen=True, slots=True)
class Match:
    """The stored image a candidate duplicates: its sha256, the Hamming distance of the hash
    that matched (0 = exact) and which one: ``exact``, ``frame`` or ``centre``."""

    sha256: str
    distance: int
    kind: str


class DedupIndex:
    """Exact (sha256) and near (perceptual-hash) duplicate detection; first stored wins.

    ``near_distance`` is the largest Hamming distance that still counts as a near duplicate;
    0 disables near-duplicate detection (exact copies only). Not thread-safe, and needs none:
    :meth:`check_and_add` is synchronous, so within one event loop it is atomic.
    """

    __slots__ = (
        "_centre_index",
        "_centres",
        "_digests",
        "_frames",
        "_has_centre",
        "_index",
        "_near",
        "_slots",
    )

    def __init__(self, near_distance: int) -> None:
        if not 0 <= near_distance <= MAX_DISTANCE:
            raise ConfigError(
                "--near-dup-distance",
                f"must be between 0 (exact duplicates only) and {MAX_DISTANCE}, "
                f"got {near_distance}",
            )
        self._near = near_distance
        # sha256 digest (32 bytes, half the memory of the hex str) -> slot, and slot -> digest;
        # the slot is the id in the Hamming indexes, so "smallest id" means "stored first".
        self._slots: dict[bytes, int] = {}
        self._digests: list[bytes | None] = []
        self._index = HammingIndex(near_distance) if near_distance else None
        self._centre_index = HammingIndex(near_distance) if near_distance else None
        # Per slot, to confirm a hit: the frame hash, the centre hash and whether it exists.
        self._frames = array("Q")
        self._centres = array("Q")
        self._has_centre = bytearray()

    @classmethod
    def rebuild(
        cls, rows: Iterable[tuple[str, int] | tuple[str, int, int | None]], near_distance: int
    ) -> Self:
        """Rebuild from the checkpoint's stored ``(sha256, phash[, centre])`` rows (ties: the
        earlier row).

        A hash read back as a signed 64-bit SQLite INTEGER (negative) is taken as its two's
        complement; a missing (None) centre is no centre. A repeated sha256 keeps its first
        row. ``rows`` is consumed in chunks of :data:`REBUILD_CHUNK`, decoded vectorised
        (about 1 s per million rows), so a caller can stream them from a cursor: only the
        index itself grows with the crawl, not a list of every row as well. Still O(n): a
        caller on an event loop runs it in a thread.
        """
        dedup = cls(near_distance)
        slots, digests = dedup._slots, dedup._digests
        frames: list[npt.NDArray[np.uint64]] = []
        centres: list[npt.NDArray[np.uint64]] = []
        present: list[npt.NDArray[np.bool_]] = []
        source = iter(rows)
        while chunk := list(itertools.islice(source, REBUILD_CHUNK)):
            found = _digests([row[0] for row in chunk])
            unsigned = _unsigned_array([row[1] for row in chunk])  # validates them all
            known = [row[2] if len(row) > 2 else None for row in chunk]
            has = np.array([c is not None for c in known], dtype=bool)
            middle = _unsigned_array([0 if c is None else c for c in known])
            kept: list[int] = []
            for i, digest in enumerate(found):
                if digest not in slots:
                    slots[digest] = len(digests)
                    digests.append(digest)
                    kept.append(i)
            if len(kept) < len(chunk):
                unsigned, middle, has = unsigned[kept], middle[kept], has[kept]
            frames.append(unsigned)
            centres.append(middle)
            present.append(has)
        frame = np.concatenate(frames) if frames else np.empty(0, dtype=np.uint64)
        centre = np.concatenate(centres) if centres else np.empty(0, dtype=np.uint64)
        has_centre = np.concatenate(present) if present else np.empty(0, dtype=bool)
        dedup._frames = array("Q", frame.tobytes())
        dedup._centres = array("Q", centre.tobytes())
        dedup._has_centre = bytearray(has_centre.astype(np.uint8).tobytes())
        if near_distance:
            ids = np.arange(frame.size)
            dedup._index = HammingIndex.build(frame, ids, near_distance)
            dedup._centre_index = HammingIndex.build(
                centre[has_centre], ids[has_centre], near_distance
            )
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

    def check_and_add(self, sha256: str, phash: int, centre: int | None = None) -> Match | None:
        """Return the stored image this one duplicates, or reserve it and return ``None``.

        Exact copies match with distance 0. Otherwise the closest stored frame hash within
        ``near_distance`` whose centre confirms it, else the closest centre hash whose
        frame confirms it (see the module docstring; ties: the first stored). Release a
        reservation whose file could not be written with :meth:`discard`.
        """
        digest = _digest(sha256)
        phash = _unsigned(phash)
        if centre is not None:
            centre = _unsigned(centre)
        if digest in self._slots:
            return Match(digest.hex(), 0, "exact")
        slot = len(self._digests)
        if self._index is not None and self._centre_index is not None:
            hit = self._near_hit(phash, centre)
            if hit is not None:
                stored = self._digests[hit[0]]
                assert stored is not None  # discarded slots are removed from the indexes
                return Match(stored.hex(), hit[1], hit[2])
            self._index.add(phash, slot)
            if centre is not None:
                self._centre_index.add(centre, slot)
        self._slots[digest] = slot
        self._digests.append(digest)
        self._frames.append(phash)
        self._centres.append(0 if centre is None else centre)
        self._has_centre.append(centre is not None)
        return None

    def discard(self, sha256: str) -> bool:
        """Undo the reservation of ``sha256`` (e.g. its file write failed); False if unknown."""
        slot = self._slots.pop(_digest(sha256), None)
        if slot is None:
            return False
        self._digests[slot] = None
        if self._index is not None and self._centre_index is not None:
            self._index.remove(slot)
            if self._has_centre[slot]:
                self._centre_index.remove(slot)
        return True

    def _near_hit(self, frame: int, centre: int | None) -> tuple[int, int, str] | None:
        """(slot, distance, kind) of the stored picture this one nearly duplicates."""
        assert self._index is not None
        assert self._centre_index is not None
        if not len(self._centre_index):
            # No centre hash stored (the ``whole`` method, small pictures): nothing can
            # confirm or be confirmed, and the closest frame is the answer.
            near = self._index.nearest(frame)
            return None if near is None else (near[0], near[1], "frame")
        for slot, distance in self._index.within(frame):
            if (
                centre is None
                or not self._has_centre[slot]
                or (self._centres[slot] ^ centre).bit_count() <= CENTRE_CONFIRM
            ):
                return slot, distance, "frame"
        if centre is not None:
            for slot, distance in self._centre_index.within(centre):
                if (self._frames[slot] ^ frame).bit_count() <= FRAME_CONFIRM:
                    return slot, distance, "centre"
        return None


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
