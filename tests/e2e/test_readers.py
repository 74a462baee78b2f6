"""The README's reader snippets, run on real crawl output (issue 13, item 14).

torchvision's ``ImageFolder`` silently skipped the ``.gif`` files of a crawl and webdataset's
``to_tuple("jpg", "json")`` failed on shards that mixed jpg/png/gif/webp members:
``--convert-to jpg`` gives one format. The snippets are taken from the README itself, so the
documentation cannot drift from what works.
"""

from __future__ import annotations

import re
import tarfile
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from bingcrawl.emulator.corpus import CorpusConfig
from bingcrawl.engine.crawler import Crawler
from bingcrawl.errors import ResumeMismatchError
from tests.support.crawls import crawl_config, read_manifest
from tests.support.emulator import StartEmulator

ROOT = Path(__file__).resolve().parents[2]
QUERIES = ("reader one", "reader two")


def snippet(reader: str) -> str:
    """The README's snippet whose first line names ``reader``."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Reading the dataset", 1)[1].split("\n## ", 1)[0]
    for block in re.findall(r"```python\n(.*?)```", section, re.S):
        if block.startswith(f"# {reader}"):
            return str(block)
    raise AssertionError(f"no {reader} snippet in the README")


def run_snippet(reader: str, out: Path) -> dict[str, Any]:
    code = snippet(reader).replace('data = "data"', f"data = {str(out)!r}")
    namespace: dict[str, Any] = {}
    exec(compile(code, f"README:{reader}", "exec"), namespace)
    return namespace


def corpus() -> CorpusConfig:
    # every format the web serves, no faults: the counts below are exact
    return CorpusConfig(
        results_per_query=30, fault_rate=0.0, exact_dup_rate=0.0, near_dup_rate=0.0,
        cross_query_rate=0.0, format_mix=(0.25, 0.25, 0.25, 0.25),  # jpeg, png, gif, webp
    )  # fmt: skip


async def crawl(server: Any, out: Path, **kw: Any) -> list[dict[str, Any]]:
    async with Crawler(crawl_config(server, out, QUERIES, limit=1000, **kw)) as crawler:
        await crawler.run()
    return read_manifest(out)


async def test_without_conversion_the_formats_are_mixed(
    start_emulator: StartEmulator, tmp_path: Path
) -> None:
    server = await start_emulator(corpus=corpus())
    manifest = await crawl(server, tmp_path)
    assert {Path(r["path"]).suffix for r in manifest} == {".jpg", ".png", ".gif", ".webp"}


async def test_converted_files_read_with_hugging_face_datasets(
    start_emulator: StartEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("datasets")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # its cache: never the user's
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")  # and no network
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    server = await start_emulator(corpus=corpus())
    out = tmp_path / "data"
    manifest = await crawl(server, out, convert_to="jpg")
    assert len(manifest) == 60
    assert {r["format"] for r in manifest} == {"jpeg"}
    assert {p.suffix for p in (out / "images").rglob("*") if p.is_file()} == {".jpg"}
    found = run_snippet("Hugging Face datasets", out)
    dataset = found["dataset"]
    assert len(dataset) == 60
    assert sorted(dataset.features["label"].names) == ["reader_one", "reader_two"]
    assert found["label"] in ("reader_one", "reader_two")
    assert found["image"].size[0] > 0


@pytest.mark.filterwarnings("ignore::ResourceWarning")  # webdataset leaves its tar files open
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_converted_shards_read_with_webdataset(
    start_emulator: StartEmulator, tmp_path: Path
) -> None:
    pytest.importorskip("webdataset")
    server = await start_emulator(corpus=corpus())
    out = tmp_path / "data"
    manifest = await crawl(server, out, convert_to="jpg", output_format="webdataset")
    members: Counter[str] = Counter()
    for shard in (out / "shards").glob("*.tar"):
        with tarfile.open(shard) as tar:
            members.update(Path(name).suffix for name in tar.getnames())
    assert members == {".jpg": 60, ".json": 60}
    found = run_snippet("webdataset", out)
    assert found["image"].mode == "RGB"
    assert found["meta"]["sha256"] in {r["sha256"] for r in manifest}
    rows = list(found["dataset"])
    assert len(rows) == 60


async def test_converted_files_read_with_torchvision(
    start_emulator: StartEmulator, tmp_path: Path
) -> None:
    pytest.importorskip("torchvision", reason="torchvision is large: not a test dependency")
    server = await start_emulator(corpus=corpus())
    out = tmp_path / "data"
    await crawl(server, out, convert_to="jpg")
    found = run_snippet("torchvision", out)
    assert len(found["dataset"]) == 60  # none skipped: ImageFolder drops .gif
    assert found["dataset"].classes == ["reader_one", "reader_two"]


async def test_resuming_with_another_format_is_refused(
    start_emulator: StartEmulator, tmp_path: Path
) -> None:
    server = await start_emulator(corpus=corpus())
    await crawl(server, tmp_path, convert_to="jpg")
    with pytest.raises(ResumeMismatchError, match="convert_to"):
        await crawl(server, tmp_path, convert_to="png")
    with pytest.raises(ResumeMismatchError, match="convert_to"):
        await crawl(server, tmp_path)  # keep
    manifest = await crawl(server, tmp_path, convert_to="jpg")  # the same: resumes
    assert len(manifest) == 60
