"""The store stage: the SQLite checkpoint and the files of the dataset.

* :class:`Checkpoint` (``checkpoint.py``) - the source of truth of a crawl; all writes go
  through one writer thread (``writer.py``) in batched transactions, reads run in threads.
* ``schema.py`` - tables and forward migrations (``PRAGMA user_version``).
* ``recovery.py`` - start-up repairs after a crash (temp files, in-flight rows, missing or
  orphaned image files).
* ``atomic.py`` - atomic, confined file writes (temp file + ``os.replace``, no symlinks).
* ``output.py`` - ``manifest.jsonl``, ``stats.json`` and jsonl / csv / parquet exports.
* ``summary.py`` - ``bingcrawl status`` as a text table or JSON.
"""

from __future__ import annotations

from bingcrawl.store.atomic import UnsafePathError, atomic_open, atomic_write_bytes
from bingcrawl.store.checkpoint import Checkpoint
from bingcrawl.store.output import (
    MANIFEST_FIELDS,
    MANIFEST_NAME,
    STATS_NAME,
    ExportResult,
    export,
    status_report,
    write_manifest,
    write_stats,
)
from bingcrawl.store.recovery import RecoveryReport
from bingcrawl.store.rows import QueryRow, StoredHashes, url_key
from bingcrawl.store.schema import CHECKPOINT_NAME, SCHEMA_VERSION
from bingcrawl.store.summary import QueryStatus, StatusSummary, read_summary

__all__ = [
    "CHECKPOINT_NAME",
    "MANIFEST_FIELDS",
    "MANIFEST_NAME",
    "SCHEMA_VERSION",
    "STATS_NAME",
    "Checkpoint",
    "ExportResult",
    "QueryRow",
    "QueryStatus",
    "RecoveryReport",
    "StatusSummary",
    "StoredHashes",
    "UnsafePathError",
    "atomic_open",
    "atomic_write_bytes",
    "export",
    "read_summary",
    "status_report",
    "url_key",
    "write_manifest",
    "write_stats",
]
