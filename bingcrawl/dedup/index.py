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

Per stored image it holds about 128 bytes with one hash (``whole``) and 194 with two
(``regions``), measured with tracemalloc after a rebuild of a million (``python -m
benchmarks.index_bench``): a Hamming index's 65 per hash (the hash, its id, and per table a
posting and a copy of the hash in table order, which makes queries 1.5-3x faster), 44 for the
exact rule (:class:`Digests`: the digest and a sorted 8-byte key with its slot) and 17 to
confirm hits (both hashes and a flag). A rebuild peaks at about 1.4 times that while it sorts
(measured at two million), and hands its freed temporaries back to the OS when it ends.
"""

from __future__ import annotations

import itertools
from array import array
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Self

import numpy as np
import numpy.typing as npt

from bingcrawl.dedup.hamming import MASK64, MAX_DISTANCE, HammingIndex, release_freed_memory
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


#: Digests :class:`Digests` keeps in its dict before they go into a sorted level.
TAIL_LIMIT: Final = 65_536
#: The middle level is merged into the main one when it passes this share of it.
_MID_SHARE: Final = 8

_EMPTY_KEYS = np.empty(0, dtype=np.uint64)
_EMPTY_SLOTS = np.empty(0, dtype=np.int32)
_ZERO = bytes(32)


def _key(digest: bytes) -> int:
    return int.from_bytes(digest[:8], "big")


class Digests:
    """sha256 digests by slot, and the slot of a digest, at ~44 bytes per digest.

    A dict of 32-byte ``bytes`` keys costs 135-165 bytes per digest in CPython (the object,
    its dict entry, a list slot). Here the digests live in one ``bytearray`` (32 bytes each,
    slot order) and are found through sorted numpy arrays of their first 8 bytes with their
    slots (12 bytes each), the last ones added in a small dict. Levels: *main*, a *middle*
    one (at most 1/:data:`_MID_SHARE` of main) and the dict (at most :data:`TAIL_LIMIT`).
    A full dict is merged into the middle level, the middle one into main when it outgrows
    its share: O(middle) at most times per :data:`TAIL_LIMIT` additions, O(main) once per
    ~main / 8 additions (~0.1 s at ten million digests, about every 20 minutes of crawl).
    Keys are prefixes, so a lookup compares the whole digest of every slot under its key:
    a collision of prefixes costs a comparison, never a wrong answer. A discarded slot's
    digest is zeroed and can no longer match.
    """

    __slots__ = ("_blob", "_live", "_main", "_mid", "_tail")

    def __init__(self) -> None:
        self._blob = bytearray()
        self._main: tuple[npt.NDArray[np.uint64], npt.NDArray[np.int32]] = (
            _EMPTY_KEYS,
            _EMPTY_SLOTS,
        )
        self._mid = self._main
        self._tail: dict[bytes, int] = {}
        self._live = 0

    @classmethod
    def from_blob(cls, blob: bytes | bytearray) -> Self:
        """Digests 0..n-1 from their concatenation (unique; e.g. a rebuild), sorted at once.

        A ``bytearray`` is taken over, not copied: the caller must not change it afterwards.
        """
        if len(blob) % 32:
            raise ValueError("a blob of sha256 digests is a multiple of 32 bytes")
        found = cls()
        found._blob = blob if isinstance(blob, bytearray) else bytearray(blob)
        found._live = len(blob) // 32
        keys = np.frombuffer(found._blob, dtype=">u8")[::4].astype(np.uint64)
        order = np.argsort(keys, kind="stable").astype(np.int32)
        found._main = (keys[order], order)
        return found

    def __len__(self) -> int:
        return self._live

    @property
    def slots(self) -> int:
        """Slots handed out so far (discarded ones included): the next slot's number."""
        return len(self._blob) // 32

    @property
    def nbytes(self) -> int:
        """Memory held, in bytes (the dict's entries estimated at 150 bytes)."""
        arrays = (*self._main, *self._mid)
        return len(self._blob) + sum(a.nbytes for a in arrays) + 150 * len(self._tail)

    def digest(self, slot: int) -> bytes | None:
        """The digest in ``slot``; None if it was discarded."""
        found = bytes(self._blob[32 * slot : 32 * slot + 32])
        return None if found == _ZERO else found

    def find(self, digest: bytes) -> int | None:
        """The slot holding ``digest``, or None."""
        slot = self._tail.get(digest)
        if slot is not None:
            return slot
        key = np.uint64(_key(digest))
        blob = self._blob
        for keys, slots in (self._main, self._mid):
            lo = int(np.searchsorted(keys, key, side="left"))
            while lo < keys.size and keys[lo] == key:
                slot = int(slots[lo])
                if blob[32 * slot : 32 * slot + 32] == digest:
                    return slot
                lo += 1
        return None

    def add(self, digest: bytes) -> int:
        """Give ``digest`` (not present: check with :meth:`find`) the next slot."""
        slot = len(self._blob) // 32
        self._blob += digest
        self._tail[digest] = slot
        self._live += 1
        if len(self._tail) >= TAIL_LIMIT:
            self._merge_tail()
        return slot

    def discard(self, digest: bytes) -> int | None:
        """Forget ``digest``; return the slot it had, or None if it was not present."""
        slot = self.find(digest)
        if slot is None:
            return None
        self._tail.pop(digest, None)
        self._blob[32 * slot : 32 * slot + 32] = _ZERO
        self._live -= 1
        return slot

    def _merge_tail(self) -> None:
        tail, self._tail = self._tail, {}
        keys = np.fromiter((_key(d) for d in tail), dtype=np.uint64, count=len(tail))
        slots = np.fromiter(tail.values(), dtype=np.int32, count=len(tail))
        self._mid = _merge(self._mid, (keys, slots))
        if self._mid[0].size * _MID_SHARE > self._main[0].size:
            self._main = _merge(self._main, self._mid)
            self._mid = (_EMPTY_KEYS, _EMPTY_SLOTS)


def _repeats(found: Digests) -> npt.NDArray[np.intp]:
    """Slots of ``found`` (as :meth:`Digests.from_blob` made it) whose digest an earlier slot
    already has: its main level is sorted by the 8-byte prefix, so only equal neighbours are
    compared in full."""
    keys, order = found._main
    blob = found._blob
    same = np.flatnonzero(keys[1:] == keys[:-1])
    repeats: set[int] = set()
    for i in same.tolist():
        # each run of equal prefixes, compared with its earlier members (a stable sort keeps
        # slot order within the run)
        later = int(order[i + 1])
        j = i
        while j >= 0 and keys[j] == keys[i + 1]:
            earlier = int(order[j])
            if blob[32 * earlier : 32 * earlier + 32] == blob[32 * later : 32 * later + 32]:
                repeats.add(later)
                break
            j -= 1
    return np.array(sorted(repeats), dtype=np.intp)


def _merge(
    a: tuple[npt.NDArray[np.uint64], npt.NDArray[np.int32]],
    b: tuple[npt.NDArray[np.uint64], npt.NDArray[np.int32]],
) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.int32]]:
    """Two levels as one sorted level (``b`` need not be sorted)."""
    order = np.argsort(b[0], kind="stable")
    keys, slots = b[0][order], b[1][order]
    at = np.searchsorted(a[0], keys, side="right")
    return np.insert(a[0], at, keys), np.insert(a[1], at, slots)


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
    )

    def __init__(self, near_distance: int) -> None:
        if not 0 <= near_distance <= MAX_DISTANCE:
            raise ConfigError(
                "--near-dup-distance",
                f"must be between 0 (exact duplicates only) and {MAX_DISTANCE}, "
                f"got {near_distance}",
            )
        self._near = near_distance
        # sha256 digest -> slot and slot -> digest (44 bytes each); the slot is the id in the
        # Hamming indexes, so "smallest id" means "stored first".
        self._digests = Digests()
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
        # Grown in place chunk by chunk (no list of chunks to concatenate: that held a second
        # copy of everything at the peak).
        blob = bytearray()
        frames, centres, has_centre = dedup._frames, dedup._centres, dedup._has_centre
        source = iter(rows)
        while chunk := list(itertools.islice(source, REBUILD_CHUNK)):
            blob += b"".join(_digests([row[0] for row in chunk]))
            frames.frombytes(_unsigned_array([row[1] for row in chunk]).tobytes())  # validated
            known = [row[2] if len(row) > 2 else None for row in chunk]
            has_centre += bytes(c is not None for c in known)
            centres.frombytes(_unsigned_array([0 if c is None else c for c in known]).tobytes())
            del chunk, known
        dedup._digests = Digests.from_blob(blob)  # takes the bytearray over, no copy
        # A repeated sha256 keeps its first row (the checkpoint never stores one twice): found
        # from the sort the digests already made, re-sorted only in that rare case.
        repeats = _repeats(dedup._digests)
        if repeats.size:
            kept = np.setdiff1d(np.arange(len(blob) // 32), repeats)
            rows32 = np.frombuffer(bytes(blob), dtype=np.uint8).reshape(-1, 32)
            dedup._digests = Digests.from_blob(bytearray(rows32[kept].tobytes()))
            for name in ("_frames", "_centres"):
                values = np.frombuffer(getattr(dedup, name), dtype=np.uint64)[kept]
                setattr(dedup, name, array("Q", values.tobytes()))
            present = np.frombuffer(dedup._has_centre, dtype=np.uint8)[kept]
            dedup._has_centre = bytearray(present.tobytes())
            del rows32, values, present
        del blob
        if near_distance:
            # Copies, not views: a buffer exported from an ``array`` cannot grow (BufferError
            # in a later check_and_add) while a view of it lives.
            frame = np.array(dedup._frames, dtype=np.uint64)
            dedup._index = HammingIndex.build(frame, np.arange(frame.size), near_distance)
            del frame
            with_centre = np.flatnonzero(np.frombuffer(dedup._has_centre, dtype=np.bool_))
            centre = np.array(dedup._centres, dtype=np.uint64)[with_centre]
            dedup._centre_index = HammingIndex.build(centre, with_centre, near_distance)
            del centre, with_centre
        # Hand the rebuild's freed temporaries back to the OS: the heap kept ~75 bytes per
        # image resident after a rebuild (measured at two million), RSS the crawl never uses.
        release_freed_memory()
        return dedup

    @property
    def near_distance(self) -> int:
        """The near-duplicate radius (0 = exact duplicates only)."""
        return self._near

    def __len__(self) -> int:
        return len(self._digests)

    @property
    def nbytes(self) -> int:
        """Memory held by the index's arrays, in bytes (the Hamming indexes' and the digests';
        the digests' dict of recent ones estimated)."""
        held = self._digests.nbytes + len(self._frames) * 17
        for index in (self._index, self._centre_index):
            if index is not None:
                held += index.nbytes
        return held

    def __contains__(self, sha256: object) -> bool:
        if not isinstance(sha256, str):
            return False
        try:
            return self._digests.find(_digest(sha256)) is not None
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
        if self._digests.find(digest) is not None:
            return Match(digest.hex(), 0, "exact")
        slot = self._digests.slots
        if self._index is not None and self._centre_index is not None:
            hit = self._near_hit(phash, centre)
            if hit is not None:
                stored = self._digests.digest(hit[0])
                assert stored is not None  # discarded slots are removed from the indexes
                return Match(stored.hex(), hit[1], hit[2])
            self._index.add(phash, slot)
            if centre is not None:
                self._centre_index.add(centre, slot)
        self._digests.add(digest)
        self._frames.append(phash)
        self._centres.append(0 if centre is None else centre)
        self._has_centre.append(centre is not None)
        return None

    def discard(self, sha256: str) -> bool:
        """Undo the reservation of ``sha256`` (e.g. its file write failed); False if unknown."""
        slot = self._digests.discard(_digest(sha256))
        if slot is None:
            return False
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
