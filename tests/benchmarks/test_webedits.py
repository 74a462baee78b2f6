"""The near-duplicate evaluation set's parts: the pinned photographs (benchmarks.photos) and
the web edits and their measure (benchmarks.webedits), on synthetic pictures."""

from __future__ import annotations

import hashlib
import io
import lzma
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from benchmarks import photos, webedits
from bingcrawl.records import NEAR_DUP_METHODS


def test_missing_or_altered_photographs_name_the_fetch_command(tmp_path: Path) -> None:
    with pytest.raises(photos.MissingPhotos, match=r"python -m benchmarks\.photos fetch --dir"):
        photos.load(tmp_path)
    first = photos.PHOTOS[0]
    (tmp_path / first.file).write_bytes(b"not the photograph")
    with pytest.raises(photos.MissingPhotos, match="sha256 differs"):
        photos.load(tmp_path)


def _ar(members: dict[str, bytes]) -> bytes:
    out = b"!<arch>\n"
    for name, body in members.items():
        header = f"{name + '/':<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(body):<10}`\n"
        out += header.encode() + body + (b"\n" if len(body) % 2 else b"")
    return out


def test_a_debian_package_is_read_without_dpkg() -> None:
    payload = b"a photograph's bytes"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        info = tarfile.TarInfo("./usr/share/backgrounds/x.jpg")
        info.size = len(payload)
        tf.addfile(info, io.BytesIO(payload))
    deb = _ar({
        "debian-binary": b"2.0\n",
        "control.tar.xz": lzma.compress(b"odd-length"),
        "data.tar.xz": lzma.compress(buf.getvalue()),
    })  # fmt: skip
    assert photos._deb_data(deb) == buf.getvalue()
    with pytest.raises(photos.MissingPhotos, match="not a Debian package"):
        photos._deb_data(b"PK\x03\x04")


def _tile(seed: int, size: int = 200) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(0, 256, 3)))
    draw = ImageDraw.Draw(img)
    for _ in range(30):
        x, y = (int(v) for v in rng.integers(0, size, 2))
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        draw.ellipse((x, y, x + 40, y + 25), fill=colour)
    return np.asarray(img)


def test_every_edit_is_made_the_same_way_for_the_same_seed() -> None:
    tile = _tile(1)
    copies = webedits.edit_copies(tile, seed=5)
    assert list(copies) == [*webedits.EDITS, *webedits.EXTRA_EDITS]
    assert copies == webedits.edit_copies(tile, seed=5)
    assert copies["corner logo"] != webedits.edit_copies(tile, seed=6)["corner logo"]
    sizes = {}
    for name, data in copies.items():
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            sizes[name] = img.size
    assert max(sizes["thumbnail <=160px"]) <= 160
    assert min(sizes["padding/letterbox"]) == 200 < max(sizes["padding/letterbox"])
    assert sizes["caption bar added"][1] > 200
    assert max(sizes["crop 1-5%"]) < 200
    assert Image.open(io.BytesIO(copies["PNG"])).format == "PNG"
    assert Image.open(io.BytesIO(copies["WebP"])).format == "WEBP"


def test_evaluate_counts_recall_per_edit_and_merges_across_pictures() -> None:
    per_tile = [webedits.tile_job(_tile(i), seed=i) for i in range(3)]
    assert set(per_tile[0]) == set(NEAR_DUP_METHODS)
    for method in NEAR_DUP_METHODS:
        result = webedits.evaluate([t[method] for t in per_tile], [0, 6])
        k = 1 + len(webedits.EDITS) + len(webedits.EXTRA_EDITS)
        assert (result["pictures"], result["images"]) == (3, 3 * k)
        assert result["negative_pairs"] == 3 * k * 2 * k // 2
        recall = result["recall"]
        # a lossless re-encode hashes exactly like the reference: found at any distance
        assert recall["0"]["PNG"] == recall["6"]["PNG"] == 1.0
        assert all(recall["0"][e] <= recall["6"][e] for e in recall["6"])
        assert result["false_merges"]["0"] <= result["false_merges"]["6"]
    regions = webedits.evaluate([t["regions"] for t in per_tile], [6])
    assert regions["recall"]["6"]["padding/letterbox"] == 1.0  # bars trimmed
    rendered = webedits.render(
        {"photos": ["a", "b", "c"], "radii": [4, 6], "sets": {"200 px": {
            m: webedits.evaluate([t[m] for t in per_tile], [4, 6]) for m in NEAR_DUP_METHODS
        }}}, 6,
    )  # fmt: skip
    assert "| 200 px (3 pictures) | regions |" in rendered
    assert "| padding/letterbox |" in rendered


def test_the_pinned_photographs_are_distinct_files() -> None:
    assert len({p.sha256 for p in photos.PHOTOS}) == len(photos.PHOTOS) == 20
    assert len({p.file for p in photos.PHOTOS}) == 20
    assert all(len(bytes.fromhex(p.sha256)) == hashlib.sha256().digest_size for p in photos.PHOTOS)
