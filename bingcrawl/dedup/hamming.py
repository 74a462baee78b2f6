"""Nearest 64-bit hash within a Hamming radius, at millions of hashes: :class:`HammingIndex`.

:class:`HammingIndex` answers "which stored 64-bit hash is closest to this one, within
distance r?" at millions of hashes without a linear scan, using multi-index hashing (Norouzi,
Punjani & Fleet, "Fast Search in Hamming Space with Multi-Index Hashing", CVPR 2012): the hash
is cut into 4 substrings of 16 bits. If two hashes differ in at most r bits, by pigeonhole one
of the 4 substrings differs in at most ``s = r // 4`` bits, so looking up every 16-bit value
within distance ``s`` of each query substring finds every candidate; candidates are then
verified with the full 64-bit distance. ``s`` grows with the radius (r <= 3 probes 4 exact
buckets, r <= 7 probes 4 x 17, r <= 11 probes 4 x 137, r <= 15 probes 4 x 697); from r = 16 on
(4 x 2517 probes) probing costs more than a vectorised scan and the index scans instead.

Why 4 x 16 bits and not more, shorter substrings for larger radii: a shorter substring has
fewer bits to tell hashes apart, so each bucket holds more candidates (a million hashes put 15
in a 16-bit bucket but 244 in a 12-bit one) and verifying candidates is what a query costs.

Storage is numpy, so memory stays small: about 65 bytes per hash (the hash, its id, and per
table an int32 posting plus a copy of the hash in table order, so that verifying a bucket's
candidates reads contiguous memory instead of gathering at random - 1.5-3x faster queries at a
million hashes). Each table is a CSR layout - ``offsets[key]`` to ``offsets[key+1]`` into the
postings - so a probe is two array reads and a whole query is a handful of vectorised numpy
calls; the offsets are a fixed 1 MB (4 x 65,536 int32; int64 past 536 million hashes). While
the index holds fewer than about 100 hashes per probed bucket, probing costs more than it saves
and queries simply scan.

No call pauses the caller (the crawler's event loop) for long, and an addition costs the same
at ten million hashes as at a hundred thousand. The index is a few *runs*, blocks with
tables, oldest and largest first; a small unindexed *tail* that takes additions (queries scan
it with ``np.bitwise_count``); and, while a merge runs, the *frozen* former tail. When the
tail outgrows ``delta_limit`` it is frozen and merged with the newest runs into one new run,
taking each older run while it holds at most :data:`_RUN_RATIO` (4) times what the merge holds
so far - the logarithmic method of a log-structured merge tree. An entry is so copied about 9
times on the way to ten million hashes, where one main block rebuilt at every merge copied
every entry every ``delta_limit`` additions (measured at five million hashes, 61 us per
addition, now 1). Queries probe each run: at most about 4 have tables at ten million (a
probe costs ~10 us however small the run). The merge is **incremental**: a counting sort cut
into steps of 32,768 hashes and one table, one step per later addition, a few ms each (a
rebuild in one go blocked for 0.1-0.4 s at a million hashes). Queries use the old runs and
scan the frozen tail until the new run is swapped in, after 5 n / 32,768 steps for a merge of
n hashes. Meanwhile the merged runs and the new one both exist; once the new one is in, the
memory freed is handed back to the OS (``malloc_trim`` on glibc), else the heap would keep it
resident and every merge would leave RSS a few MB higher.

:class:`~bingcrawl.dedup.index.DedupIndex` builds the crawler's dedup rules on it.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Iterator
from typing import Final, Self

import numpy as np
import numpy.typing as npt

from bingcrawl.errors import ConfigError

__all__ = ["MASK64", "MAX_DISTANCE", "HammingIndex", "release_freed_memory"]

#: Largest radius :class:`HammingIndex` accepts (half the bits: beyond it, anything matches).
MAX_DISTANCE: Final = 32

_SUBSTRINGS: Final = 4
_SUB_BITS: Final = 16
_BUCKETS: Final = 1 << _SUB_BITS
_SCAN_FROM_RADIUS: Final = 16
_DEFAULT_DELTA_LIMIT: Final = 16_384
# A merge takes the next older run too while that run holds at most this many times what
# the merge holds so far: at ten million hashes at most 4 runs have tables and an entry is
# copied about 9 times in all (1: 8 runs, 5 copies; 3: 5 runs, 8 copies).
_RUN_RATIO: Final = 4
# Hashes one merge step handles: a step costs 1-3 ms (a radix argsort of this many 16-bit
# keys plus scatters, and the page faults of fresh memory) and the per-chunk bincounts over
# 65,536 buckets stay a small part of it.
_MERGE_CHUNK: Final = 32_768
# Hashes one step of :meth:`HammingIndex.build` handles (it runs all steps in one call).
_BUILD_CHUNK: Final = 1 << 20
# A probe and its candidates cost about as much as scanning 100 hashes (measured at radius 8
# and 12 on 2 cores): with fewer indexed hashes than 100 per probe, a query scans instead.
_SCAN_BELOW_PER_PROBE: Final = 100
#: Mask of a 64-bit unsigned hash.
MASK64: Final = (1 << 64) - 1
_MAX_ENTRIES: Final = 2**31 - 1  # postings are int32
_INT32_MAX: Final = 2**31 - 1

_U64 = npt.NDArray[np.uint64]
_I64 = npt.NDArray[np.int64]
_Ints = npt.NDArray[np.int32] | npt.NDArray[np.int64]
_Bools = npt.NDArray[np.bool_]
_Hit = tuple[int, int]  # (id, distance)
_Hits = tuple[_I64, npt.NDArray[np.uint8]]  # ids and distances


def _probe_masks(radius: int) -> npt.NDArray[np.int64]:
    """Every 16-bit XOR mask with at most ``radius`` bits set."""
    values = np.arange(_BUCKETS, dtype=np.uint32)
    return values[np.bitwise_count(values) <= radius].astype(np.int64)


def _find_malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None where the C library has none (musl, macOS, Windows)."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError, TypeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    found: Callable[[int], int] = trim
    return found


_MALLOC_TRIM: Final = _find_malloc_trim()


def release_freed_memory() -> None:
    """Give the pages of free heap chunks back to the OS (glibc; elsewhere nothing).

    A merge frees the runs it merged and the bucket counts at once. Below glibc's mmap
    threshold (which rises to the largest block freed so far, up to 32 MB) those came from
    the heap, and freed heap memory stays resident: each merge would leave RSS a few MB
    higher than the index needs. ``malloc_trim(0)`` returns every whole free page of every
    arena; it takes about a millisecond, once per merge (every 16,384 additions).
    """
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def _check_hash(h: int) -> int:
    if not 0 <= h <= MASK64:
        raise ValueError(f"hash must be an unsigned 64-bit int, got {h}")
    return h


def _substring(hashes: _U64, t: int) -> npt.NDArray[np.uint16]:
    """The ``t``-th 16-bit substring of every hash."""
    return ((hashes >> np.uint64(_SUB_BITS * t)) & np.uint64(_BUCKETS - 1)).astype(np.uint16)


class _Block:
    """Entries ``[0, n)`` of parallel arrays (hash, id, alive), optionally with CSR tables.

    The tail block grows by doubling (it stays small); a run is built once at its
    final size by :class:`_Merge` and only has entries marked dead afterwards.
    """

    __slots__ = ("alive", "dead", "hashes", "ids", "n", "offsets", "postings", "table_hashes")

    def __init__(self, hashes: _U64, ids: _I64, n: int) -> None:
        self.hashes, self.ids, self.n = hashes, ids, n
        self.alive: _Bools = np.ones(hashes.size, dtype=bool)
        self.dead = 0
        self.offsets: _Ints | None = None
        self.postings: npt.NDArray[np.int32] | None = None
        self.table_hashes: _U64 | None = None

    @classmethod
    def empty(cls, capacity: int = 1024) -> _Block:
        return cls(np.zeros(capacity, dtype=np.uint64), np.zeros(capacity, dtype=np.int64), 0)

    @property
    def live(self) -> int:
        return self.n - self.dead

    @property
    def nbytes(self) -> int:
        arrays = (self.hashes, self.ids, self.alive, self.offsets, self.postings, self.table_hashes)
        return sum(a.nbytes for a in arrays if a is not None)

    def append(self, h: int, id: int) -> None:
        if self.n == self.hashes.size:
            capacity = max(1024, 2 * self.n)
            for name in ("hashes", "ids", "alive"):
                old = getattr(self, name)
                new = np.zeros(capacity, dtype=old.dtype)
                new[: self.n] = old[: self.n]
                setattr(self, name, new)
        self.hashes[self.n] = h
        self.ids[self.n] = id
        self.alive[self.n] = True
        self.n += 1

    def kill(self, id: int) -> int:
        """Mark every live entry stored under ``id`` dead; returns how many there were."""
        hits = np.flatnonzero((self.ids[: self.n] == id) & self.alive[: self.n])
        self.alive[hits] = False
        self.dead += int(hits.size)
        return int(hits.size)

    def scan(self, q: np.uint64, radius: int) -> _Hits | None:
        dist = np.bitwise_count(self.hashes[: self.n] ^ q)
        ok = np.flatnonzero(dist <= radius)
        if ok.size == 0:
            return None
        return self.live_hits(ok, dist[ok])

    def probe(self, keys: _I64, q: np.uint64, radius: int) -> _Hits | None:
        """Verify the candidates of the given table buckets (``t * 65536 + substring``)."""
        assert self.offsets is not None
        assert self.postings is not None
        assert self.table_hashes is not None
        lo = self.offsets[keys]
        lengths = self.offsets[keys + 1] - lo
        nonempty = lengths > 0
        lo, lengths = lo[nonempty], lengths[nonempty]
        total = int(lengths.sum())
        if total == 0:
            return None
        # Concatenate the ranges [lo, lo + length) without a Python loop.
        starts = np.cumsum(lengths) - lengths
        pos = np.arange(total, dtype=np.int64) + np.repeat(lo - starts, lengths)
        # Each bucket's hashes are contiguous in the table-ordered copy: cache-friendly reads.
        dist = np.bitwise_count(self.table_hashes[pos] ^ q)
        ok = np.flatnonzero(dist <= radius)
        if ok.size == 0:
            return None
        return self.live_hits(self.postings[pos[ok]].astype(np.int64), dist[ok])

    def live_hits(self, slots: _I64, dist: npt.NDArray[np.uint8]) -> _Hits | None:
        """(ids, distances) of the live ones among ``slots``, or None if none is live."""
        if self.dead:
            live = self.alive[slots]
            slots, dist = slots[live], dist[live]
            if slots.size == 0:
                return None
        return self.ids[slots], dist


def _bucket_counts(upto: int) -> _Ints:
    """Zeroed per-table bucket counts for entries whose table positions reach ``upto``.

    The counts become offsets and cursors, which reach 4 x the entries: int32 while that
    fits (the tables' fixed 4 x 65,536 entries then take 1 MB, not 2), int64 beyond.
    """
    if upto > _INT32_MAX:
        return np.zeros((_SUBSTRINGS, _BUCKETS), dtype=np.int64)
    return np.zeros((_SUBSTRINGS, _BUCKETS), dtype=np.int32)


class _Merge:
    """Build a new run from blocks' live entries, in bounded steps.

    A counting sort: the *copy* pass compacts the live entries into new arrays and counts
    every table's bucket sizes, ``offsets`` follow by a cumulative sum, and the *scatter* pass
    puts each entry at its bucket's cursor. Each step handles one chunk of the copy pass, or
    one table of one chunk of the scatter pass. Alive flags are snapshotted at the start, so
    entries removed during the merge are copied as live: :class:`HammingIndex` replays those
    removals on the result.
    """

    __slots__ = (
        "_chunk",
        "_counts",
        "_done",
        "_sources",
        "_steps",
        "_written",
        "result",
    )

    def __init__(self, sources: list[_Block], *, tables: bool, chunk: int | None = None) -> None:
        # (hashes, ids, alive snapshot) of each source's used part.
        self._sources = [(b.hashes[: b.n], b.ids[: b.n], b.alive[: b.n].copy()) for b in sources]
        total = sum(int(np.count_nonzero(alive)) for _, _, alive in self._sources)
        if total > _MAX_ENTRIES:
            raise OverflowError("HammingIndex holds at most 2**31 - 1 hashes")
        self._chunk = max(_MERGE_CHUNK if chunk is None else chunk, 1)
        out = _Block(np.empty(total, dtype=np.uint64), np.empty(total, dtype=np.int64), 0)
        self._counts = _bucket_counts(_SUBSTRINGS * total) if tables else None
        if tables and total:
            out.postings = np.empty(_SUBSTRINGS * total, dtype=np.int32)
            out.table_hashes = np.empty(_SUBSTRINGS * total, dtype=np.uint64)
        self.result = out
        self._written = 0
        self._done = False
        self._steps: Iterator[None] = self._run_steps()

    def step(self) -> bool:
        """Do one step; returns True once the result is complete."""
        if not self._done:
            try:
                next(self._steps)
            except StopIteration:
                self._done = True
        return self._done

    def run(self) -> _Block:
        """Finish every remaining step now."""
        while not self.step():
            pass
        return self.result

    def _run_steps(self) -> Iterator[None]:
        out = self.result
        span = sum(hashes.size for hashes, _, _ in self._sources)
        seen = 0
        for hashes, ids, alive in self._sources:
            for lo in range(0, hashes.size, self._chunk):
                hi = min(lo + self._chunk, hashes.size)
                keep = np.flatnonzero(alive[lo:hi]) + lo
                w = self._written
                out.hashes[w : w + keep.size] = hashes[keep]
                out.ids[w : w + keep.size] = ids[keep]
                self._written += int(keep.size)
                if self._counts is not None:
                    block = out.hashes[w : w + keep.size]
                    for t in range(_SUBSTRINGS):
                        self._counts[t] += np.bincount(_substring(block, t), minlength=_BUCKETS)
                    # Touch the tables' fresh memory a slice at a time: the scatter pass writes
                    # all over it at once, and the page faults would make its first steps slow.
                    done = (seen * out.hashes.size) // span
                    seen += hi - lo
                    upto = (seen * out.hashes.size) // span
                    if out.postings is not None and out.table_hashes is not None:
                        for t in range(_SUBSTRINGS):
                            at = t * out.hashes.size
                            out.postings[at + done : at + upto] = 0
                            out.table_hashes[at + done : at + upto] = 0
                yield None
        out.n = n = self._written
        counts, self._counts = self._counts, None
        if counts is None or out.postings is None or out.table_hashes is None:
            return
        # Every table counted the same n entries, so one running sum over the tables in a row
        # is each bucket's end, table t's buckets starting at t * n. Computed in place, and
        # the counts become the cursors: the tables' only temporary is the counts array
        # (1 MB), where a sum, its shifted and concatenated copies held 8-10 MB of heap, which
        # the allocator kept (RSS) after the merge.
        out.offsets = offsets = np.empty(_SUBSTRINGS * _BUCKETS + 1, dtype=counts.dtype)
        offsets[0] = 0
        np.cumsum(counts.ravel(), out=offsets[1:])
        cursor = counts  # where each bucket's next entry goes
        cursor[...] = offsets[:-1].reshape(_SUBSTRINGS, _BUCKETS)
        for lo in range(0, n, self._chunk):
            block = out.hashes[lo : lo + self._chunk]
            rank = np.arange(block.size, dtype=np.int64)
            for t in range(_SUBSTRINGS):
                sub = _substring(block, t)
                # A stable sort of 16-bit keys is a radix sort in numpy: O(chunk).
                order = np.argsort(sub, kind="stable")
                counts = np.bincount(sub, minlength=_BUCKETS)
                first = np.cumsum(counts) - counts  # where each key's run starts in `order`
                keys = sub[order]
                pos = cursor[t, keys] + (rank - first[keys])
                out.postings[pos] = order + lo
                out.table_hashes[pos] = block[order]
                cursor[t] += counts
                yield None


class HammingIndex:
    """Nearest 64-bit hash within ``max_distance`` bits, by multi-index hashing.

    ``add(h, id)`` stores a hash under an integer id (ids should be unique; ``remove(id)``
    removes every entry with that id). ``nearest(h)`` returns ``(id, distance)`` of the closest
    stored hash within the radius - on a tie, the smallest id - or ``None``. Every call does a
    bounded amount of work (see the module docstring). Not thread-safe: use it from one
    thread (the crawler's event loop).
    """

    __slots__ = (
        "_delta_limit",
        "_frozen",
        "_masks",
        "_merge",
        "_merge_from",
        "_radius",
        "_removed_while_merging",
        "_runs",
        "_scan_only",
        "_tail",
    )

    def __init__(self, max_distance: int, *, delta_limit: int = _DEFAULT_DELTA_LIMIT) -> None:
        if not 0 <= max_distance <= MAX_DISTANCE:
            raise ConfigError("max_distance", f"must be between 0 and {MAX_DISTANCE} bits")
        if delta_limit < 1:
            raise ConfigError("delta_limit", f"must be >= 1, got {delta_limit}")
        self._radius = max_distance
        self._delta_limit = delta_limit
        self._scan_only = max_distance >= _SCAN_FROM_RADIUS
        self._masks = _probe_masks(max_distance // _SUBSTRINGS)
        # Blocks with tables, oldest first, each larger than RUN_RATIO x the next (roughly).
        self._runs: list[_Block] = []
        self._frozen: _Block | None = None  # the former tail while a merge runs
        self._merge_from = 0  # the merge in progress replaces self._runs[_merge_from:]
        self._tail = _Block.empty()
        self._merge: _Merge | None = None
        self._removed_while_merging: list[int] = []

    @classmethod
    def build(
        cls,
        hashes: npt.ArrayLike,
        ids: npt.ArrayLike,
        max_distance: int,
        *,
        delta_limit: int = _DEFAULT_DELTA_LIMIT,
    ) -> Self:
        """Build an index from arrays of hashes (uint64) and ids (int64) in one pass.

        This one call does O(n) work (about 0.1-0.3 s per million hashes): at start-up, or
        in a thread (the new index is not shared until it is returned).
        """
        # (not copied when they already are such arrays: the build only reads them)
        h = np.asarray(hashes, dtype=np.uint64).ravel()
        i = np.asarray(ids, dtype=np.int64).ravel()
        if h.shape != i.shape:
            raise ValueError(f"{h.size} hashes but {i.size} ids")
        index = cls(max_distance, delta_limit=delta_limit)
        source = _Block(h, i, h.size)
        # Large chunks: the same counting sort with little per-step overhead, and its
        # temporaries (5 int64 arrays of a chunk) bounded, not 40 bytes per hash at the peak.
        merge = _Merge([source], tables=not index._scan_only, chunk=_BUILD_CHUNK)
        built = merge.run()
        index._runs = [built] if built.n else []
        return index

    @property
    def max_distance(self) -> int:
        """The radius the index was built for."""
        return self._radius

    @property
    def merging(self) -> bool:
        """Whether a merge of the tail into the tables is under way (it advances on :meth:`add`)."""
        return self._merge is not None

    @property
    def nbytes(self) -> int:
        """Memory held by the index's arrays, in bytes (including spare capacity and a merge
        in progress)."""
        merging = self._merge.result.nbytes if self._merge is not None else 0
        return sum(b.nbytes for b in self._blocks()) + merging

    def __len__(self) -> int:
        return sum(b.live for b in self._blocks())

    def __repr__(self) -> str:
        return f"<HammingIndex {len(self)} hashes, max_distance={self._radius}>"

    def add(self, h: int, id: int) -> None:
        """Store hash ``h`` (unsigned 64-bit) under ``id``."""
        _check_hash(h)
        self._tail.append(h, id)
        if self._merge is not None:
            self._advance()
        elif self._tail.n > self._delta_limit:
            self._start_merge()

    def remove(self, id: int) -> bool:
        """Remove the entries stored under ``id``; returns whether there were any. O(n)."""
        found = 0
        for at, run in enumerate(self._runs):
            killed = run.kill(id)
            if killed and self._merge is not None and at >= self._merge_from:
                self._removed_while_merging.append(id)  # the merge copied the entry as live
            found += killed
        if self._frozen is not None and self._frozen.kill(id):
            self._removed_while_merging.append(id)
            found += 1
        found += self._tail.kill(id)
        if self._merge is None:
            for at, run in enumerate(self._runs):
                if run.dead > max(self._delta_limit, run.n // 4):
                    self._start_merge(at)  # compacts the removed entries away, step by step
                    break
        return found > 0

    def flush(self) -> None:
        """Finish a merge in progress now (O(n) in this call; tests and benchmarks)."""
        while self._merge is not None:
            self._advance()

    def nearest(self, h: int, max_distance: int | None = None) -> tuple[int, int] | None:
        """``(id, distance)`` of the closest stored hash within the radius, or ``None``.

        ``max_distance`` may narrow the index's radius for this query, never widen it. Ties
        go to the smallest id.
        """
        best: _Hit | None = None
        for ids, dist in self._hits(h, max_distance):
            d = int(dist.min())
            found = (int(ids[dist == d].min()), d)
            if best is None or (found[1], found[0]) < (best[1], best[0]):
                best = found  # closer, or as close with a smaller id
        return best

    def within(self, h: int, max_distance: int | None = None) -> list[tuple[int, int]]:
        """``(id, distance)`` of every stored hash within the radius, once each, closest
        first (ties: smaller id first). Costs what :meth:`nearest` costs, plus the sort of
        the hits."""
        found = list(self._hits(h, max_distance))
        if not found:
            return []
        ids = np.concatenate([f[0] for f in found])
        dist = np.concatenate([f[1] for f in found])
        # A hash close in several substrings is found through several tables: keep one.
        ids, first = np.unique(ids, return_index=True)
        dist = dist[first]
        order = np.lexsort((ids, dist))
        return list(zip(ids[order].tolist(), dist[order].tolist(), strict=True))

    # -- internals --------------------------------------------------------------------------

    def _hits(self, h: int, max_distance: int | None) -> Iterator[_Hits]:
        """The live hits within the radius, block by block."""
        _check_hash(h)
        radius = self._radius if max_distance is None else max_distance
        if not 0 <= radius <= self._radius:
            raise ValueError(f"max_distance must be between 0 and {self._radius}, got {radius}")
        q = np.uint64(h)
        keys: _I64 | None = None  # the same buckets in every run: computed once
        for block in self._blocks():
            if block.n == 0:
                continue
            if block.offsets is not None and block.n >= self._masks.size * (
                _SUBSTRINGS * _SCAN_BELOW_PER_PROBE
            ):
                if keys is None:
                    keys = self._probe_keys(h)
                found = block.probe(keys, q, radius)
            else:
                # Few hashes for this many probes (or no tables): one scan is cheaper.
                found = block.scan(q, radius)
            if found is not None:
                yield found

    def _blocks(self) -> Iterator[_Block]:
        yield from self._runs
        if self._frozen is not None:
            yield self._frozen
        yield self._tail

    def _probe_keys(self, h: int) -> _I64:
        """Every table bucket (``t * 65536 + value``) within ``s`` bits of ``h``'s substrings."""
        subs = np.array(
            [(h >> (_SUB_BITS * t)) & (_BUCKETS - 1) for t in range(_SUBSTRINGS)], dtype=np.int64
        )
        base = np.arange(_SUBSTRINGS, dtype=np.int64)[:, None] * _BUCKETS
        keys: _I64 = ((subs[:, None] ^ self._masks[None, :]) + base).ravel()
        return keys

    def _start_merge(self, compact_from: int | None = None) -> None:
        """Freeze the tail and start merging it, with the newest runs, into one new run.

        The frozen tail takes the newest runs with it while the next one is at most
        :data:`_RUN_RATIO` times what the merge holds so far (a run from ``compact_from`` on
        is always taken: it holds removed entries to drop). Each entry is thus copied a
        handful of times however large the index grows (about 9 times on the way to ten
        million), where merging everything into one block copied every entry at every
        merge: O(n) per :attr:`delta_limit` additions.
        """
        self._frozen, self._tail = self._tail, _Block.empty()
        runs = self._runs
        at = len(runs) if compact_from is None else compact_from
        total = self._frozen.live + sum(run.live for run in runs[at:])
        while at > 0 and runs[at - 1].live <= _RUN_RATIO * total:
            at -= 1
            total += runs[at].live
        self._merge_from = at
        self._merge = _Merge([*runs[at:], self._frozen], tables=not self._scan_only)
        self._advance()

    def _advance(self) -> None:
        """One merge step; swap the new run in when it is complete."""
        merge = self._merge
        assert merge is not None
        if not merge.step():
            return
        run = merge.result
        for id in self._removed_while_merging:
            run.kill(id)
        kept = self._runs[: self._merge_from]
        self._runs = [*kept, run] if run.n else kept
        self._frozen, self._merge = None, None
        self._removed_while_merging = []
        del merge, run  # the former blocks and the counts: free them before trimming
        release_freed_memory()
