"""Choose the near-duplicate threshold by measurement: precision and recall per Hamming distance.

    python -m benchmarks.threshold [--json out.json] [--algos phash,dhash,ahash,whash]
                                   [--tiles 256,128] [--queries 6] [--results 160] [--workers N]
                                   [--web-tiles 256,192,128] [--photos DIR | --no-web]

Needs the ``bench`` extra (``pip install -e '.[bench]'``): scikit-image and scikit-learn ship
real photographs inside their wheels (read from the installed files, nothing is downloaded).

Two tuning sets, every image hashed by the production path (:func:`bingcrawl.imaging.hashing.
hash_image`, JPEG draft mode on):

* **photos**: 18 real photographs (16 from scikit-image, china and flower from scikit-learn)
  cut into non-overlapping square tiles, one set per ``--tiles`` size (256 px: 65 pictures;
  128 px: 268 pictures and 17 times the pairs, so the stronger test of precision); every
  tile is a distinct picture.
  Tiles of one photo can look alike (two patches of sky, brick or gravel): the realistic hard
  negatives. Near-uniform tiles (grey standard deviation below 12, such as the black surround
  of the retina) are left out: two blank tiles are the same picture for any dataset. Each tile
  is stored as JPEG quality 92 (the reference) and goes through 15 transforms: rescale to 50,
  70, 90 %; JPEG quality 40, 60, 90; brightness and contrast +-10 %; PNG -> JPEG (a PNG
  reference re-saved as JPEG 85); JPEG -> PNG (the reference's pixels saved as PNG); crop 1,
  2, 3 % off the width and height at the top-left corner, which shifts the content (harsher
  than trimming every border evenly).
* **emulator**: the near duplicates that the emulator's corpus serves
  (:mod:`bingcrawl.emulator.corpus`: rescaled, recompressed to JPEG or PNG, brightness and
  contrast shifted, some retouched 2 or 4 hash bits away) against their originals, over
  ``--queries`` queries of ``--results`` results.

For each distance d (0..16): recall per transform (the fraction of copies within d of their
reference); *false merges*, the pairs of different pictures within d, counted over every pair
of images of the set (references and copies alike); and precision = true merges / all merges,
where the true merges are the copy-reference pairs within d. The default is the largest d
whose precision is >= 0.999 on every set for the first algorithm (pHash), lowered to the
smallest distance that measures the same (pHash distances are always even: a pHash has
exactly 32 bits set, so d = 7 behaves as d = 6). The false-merge
rate per pair (false merges / pairs of different pictures) says what a larger collection
risks: a new image is compared with every stored one, so at a million stored images a rate of
1e-7 per pair is already 0.1 expected false merges per new image. The tuning sets are hashed
with the ``whole`` method (one hash per picture): they choose the radius.

Then the **evaluation** set (:mod:`benchmarks.webedits`, photographs from
``python -m benchmarks.photos fetch``, none of them tuned on): real photographs' tiles edited
the way copies on the web are (logos, captions, crops, padding, re-encodes...), every
near-duplicate method (``--near-dup-method``) at the default radius and two others: recall per
edit and the merges of distinct pictures. ``--no-web`` leaves it out.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import os
import sys
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageEnhance

from benchmarks import photos, webedits
from bingcrawl.config import DEFAULT_NEAR_DUP_DISTANCE
from bingcrawl.emulator.corpus import Corpus, CorpusConfig
from bingcrawl.imaging.hashing import HASH_ALGOS, hash_image
from bingcrawl.records import NEAR_DUP_METHODS, Hashed

#: Precision the default threshold must keep on every set.
MIN_PRECISION: Final = 0.999
MAX_D: Final = 16

#: (import name, pip requirement) of the packages whose wheels ship the photographs.
PHOTO_PACKAGES: Final = (("skimage", "scikit-image"), ("sklearn", "scikit-learn"))

#: Real photographs shipped inside the wheels (synthetic images, silhouettes, logos, tiny
#: images and the right half of a stereo pair are left out).
PHOTOS: Final = (
    ("skimage", "data/astronaut.png"),
    ("skimage", "data/brick.png"),
    ("skimage", "data/camera.png"),
    ("skimage", "data/cell.png"),
    ("skimage", "data/chelsea.png"),
    ("skimage", "data/clock_motion.png"),
    ("skimage", "data/coffee.png"),
    ("skimage", "data/coins.png"),
    ("skimage", "data/grass.png"),
    ("skimage", "data/gravel.png"),
    ("skimage", "data/hubble_deep_field.jpg"),
    ("skimage", "data/ihc.png"),
    ("skimage", "data/moon.png"),
    ("skimage", "data/motorcycle_left.png"),
    ("skimage", "data/retina.jpg"),
    ("skimage", "data/rocket.jpg"),
    ("sklearn", "datasets/images/china.jpg"),
    ("sklearn", "datasets/images/flower.jpg"),
)

REFERENCE_QUALITY: Final = 92
MIN_TILE_STD: Final = 12.0
TRANSFORMS: Final = (
    "rescale 50%",
    "rescale 70%",
    "rescale 90%",
    "JPEG q40",
    "JPEG q60",
    "JPEG q90",
    "brightness +10%",
    "brightness -10%",
    "contrast +10%",
    "contrast -10%",
    "PNG -> JPEG",
    "JPEG -> PNG",
    "crop 1%",
    "crop 2%",
    "crop 3%",
)


class MissingPackage(RuntimeError):
    """An optional package of the ``bench`` extra is not installed."""


# --------------------------------------------------------------------------- the photo set


def photo_paths() -> list[Path]:
    """The photographs' files inside the installed packages (nothing is imported or fetched)."""
    roots: dict[str, Path] = {}
    missing = []
    for module, requirement in PHOTO_PACKAGES:
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            missing.append(requirement)
            continue
        roots[module] = Path(next(iter(spec.submodule_search_locations)))
    if missing:
        one = len(missing) == 1
        wheels = "its wheel" if one else "their wheels"
        raise MissingPackage(
            f"missing {'package' if one else 'packages'} {' and '.join(missing)}: the real "
            f"photographs come from inside "
            f"{wheels}. Install the bench extra: pip install -e '.[bench]' "
            f"(or: pip install {' '.join(missing)})"
        )
    paths = [roots[module] / rel for module, rel in PHOTOS]
    absent = [str(p) for p in paths if not p.is_file()]
    if absent:
        raise MissingPackage(f"photographs missing from the installed packages: {absent}")
    return paths


def tiles(paths: Sequence[Path], size: int) -> list[tuple[str, npt.NDArray[np.uint8]]]:
    """Non-overlapping ``size`` x ``size`` tiles (a centred grid) of each photo, as RGB or L."""
    out = []
    for path in paths:
        with Image.open(path) as img:
            img.load()
            pic = img.convert("RGB") if img.mode not in ("L", "RGB") else img.copy()
        out += webedits.grid_tiles(path.stem, pic, size, MIN_TILE_STD)
    return out


def _encode(img: Image.Image, fmt: str, quality: int = REFERENCE_QUALITY) -> bytes:
    buf = io.BytesIO()
    if fmt == "JPEG":
        img.save(buf, "JPEG", quality=quality)
    else:
        img.save(buf, "PNG")
    return buf.getvalue()


def transformed(tile: npt.NDArray[np.uint8]) -> dict[str, bytes]:
    """Every transform of a tile: name -> the copy's bytes (see :func:`reference_of`)."""
    img = Image.fromarray(tile)
    w, h = img.size
    jpeg = _encode(img, "JPEG")
    out: dict[str, bytes] = {}
    for pct in (50, 70, 90):
        size = (round(w * pct / 100), round(h * pct / 100))
        small = img.resize(size, Image.Resampling.LANCZOS)
        out[f"rescale {pct}%"] = _encode(small, "JPEG")
    for q in (40, 60, 90):
        out[f"JPEG q{q}"] = _encode(img, "JPEG", q)
    for sign, factor in (("+", 1.1), ("-", 0.9)):
        bright = ImageEnhance.Brightness(img).enhance(factor)
        out[f"brightness {sign}10%"] = _encode(bright, "JPEG")
        contrast = ImageEnhance.Contrast(img).enhance(factor)
        out[f"contrast {sign}10%"] = _encode(contrast, "JPEG")
    out["PNG -> JPEG"] = _encode(img, "JPEG", 85)
    with Image.open(io.BytesIO(jpeg)) as decoded:
        out["JPEG -> PNG"] = _encode(decoded, "PNG")
    for pct in (1, 2, 3):
        dx, dy = round(w * pct / 100), round(h * pct / 100)
        out[f"crop {pct}%"] = _encode(img.crop((dx, dy, w, h)), "JPEG")
    return out


def reference_of(transform: str) -> str:
    """Which reference a transform's copy is compared with: ``ref png`` or ``ref jpeg``."""
    return "ref png" if transform == "PNG -> JPEG" else "ref jpeg"


def hash_bytes(data: bytes, algo: str) -> int:
    """The production hash of ``data`` (JPEG draft mode on, as the crawler runs it), of the
    whole picture (the ``whole`` method)."""
    result = hash_image(data, algo=algo, method="whole")
    if not isinstance(result, Hashed):
        raise RuntimeError(f"{algo} could not hash a test image: {result}")
    return result.phash


def tile_job(tile: npt.NDArray[np.uint8], algos: Sequence[str]) -> dict[str, dict[str, int]]:
    """Hashes of one tile's references and copies: algo -> {"ref jpeg", "ref png", transform}."""
    img = Image.fromarray(tile)
    refs = {"ref jpeg": _encode(img, "JPEG"), "ref png": _encode(img, "PNG")}
    copies = transformed(tile)
    out: dict[str, dict[str, int]] = {}
    for algo in algos:
        hashes = {name: hash_bytes(data, algo) for name, data in refs.items()}
        hashes.update({name: hash_bytes(data, algo) for name, data in copies.items()})
        out[algo] = hashes
    return out


# --------------------------------------------------------------------------- the emulator set


def emulator_keys(config: CorpusConfig, queries: int) -> list[str]:
    """URL keys of the originals and near duplicates that ``queries`` queries return."""
    corpus = Corpus(config)
    keys = []
    for q in range(queries):
        for spec in corpus.query_results(f"threshold benchmark {q}"):
            if spec.fault is None and spec.variant != "mirror":
                keys.append(spec.key)
    return keys


def emulator_job(
    config: CorpusConfig, keys: Sequence[str], algos: Sequence[str]
) -> list[tuple[int, str, dict[str, int]]]:
    """(base, variant label, algo -> hash) of each key's bytes."""
    corpus = Corpus(config)
    out = []
    for key in keys:
        spec = corpus.spec(key)
        assert spec is not None
        data = corpus.image_bytes(spec)
        label = spec.variant
        if label == "recompressed":
            label = f"recompressed {'PNG' if spec.format == 'png' else 'JPEG'}"
        out.append((spec.base, label, {algo: hash_bytes(data, algo) for algo in algos}))
    return out


# --------------------------------------------------------------------------- evaluation


@dataclass(slots=True)
class HashSet:
    """Hashed images of one set for one algorithm: picture groups and copy->reference pairs."""

    hashes: list[int] = field(default_factory=list)
    groups: list[int] = field(default_factory=list)
    pairs: dict[str, list[tuple[int, int]]] = field(default_factory=dict)

    def add(self, h: int, group: int) -> int:
        self.hashes.append(h)
        self.groups.append(group)
        return len(self.hashes) - 1


def evaluate(hs: HashSet, max_d: int = MAX_D) -> dict[str, Any]:
    """Recall per transform, false merges, precision and false-merge rate for d in 0..max_d."""
    h = np.array(hs.hashes, dtype=np.uint64)
    g = np.array(hs.groups, dtype=np.int64)
    hist = np.zeros(65, dtype=np.int64)
    for i in range(h.size - 1):  # row by row: memory stays O(n)
        other = g[i + 1 :] != g[i]
        hist += np.bincount(np.bitwise_count(h[i + 1 :][other] ^ h[i]), minlength=65)
    negatives = int(hist.sum())
    false_merges = np.cumsum(hist)[: max_d + 1]
    recall: dict[str, list[float]] = {}
    true_merges = np.zeros(max_d + 1, dtype=np.int64)
    for name, pairs in hs.pairs.items():
        a, b = np.array(pairs, dtype=np.int64).T
        dist = np.bitwise_count(h[a] ^ h[b])
        within = np.array([int((dist <= d).sum()) for d in range(max_d + 1)])
        true_merges += within
        recall[name] = (within / dist.size).tolist()
    merges = true_merges + false_merges
    precision = np.where(merges > 0, true_merges / np.maximum(merges, 1), 1.0)
    return {
        "images": int(h.size),
        "pictures": int(np.unique(g).size),
        "copies": int(sum(len(p) for p in hs.pairs.values())),
        "negative_pairs": negatives,
        "recall": recall,
        "true_merges": true_merges.tolist(),
        "false_merges": false_merges.tolist(),
        "precision": precision.tolist(),
        "false_merge_rate": (false_merges / max(negatives, 1)).tolist(),
        "closest_different_pictures": int(np.flatnonzero(hist)[0]) if negatives else None,
    }


def choose(results: Iterable[dict[str, Any]], min_precision: float = MIN_PRECISION) -> int:
    """The largest d whose precision is >= ``min_precision`` on every set, lowered while the
    next smaller d measures exactly the same (same merges, so the same recall) on every set."""
    found = list(results)
    ok = [d for d in range(MAX_D + 1) if all(r["precision"][d] >= min_precision for r in found)]
    if not ok:
        return 0
    d = max(ok)
    while d > 0 and all(
        r["true_merges"][d - 1] == r["true_merges"][d]
        and r["false_merges"][d - 1] == r["false_merges"][d]
        for r in found
    ):
        d -= 1
    return d


# --------------------------------------------------------------------------- running


def run(args: argparse.Namespace) -> dict[str, Any]:
    algos: list[str] = args.algos
    started = time.perf_counter()
    paths = photo_paths()
    photo_sets = {size: tiles(paths, size) for size in args.tiles}
    corpus_config = CorpusConfig(
        seed=args.seed,
        results_per_query=args.results,
        fault_rate=0.0,
        exact_dup_rate=0.0,
        near_dup_rate=0.35,
        cross_query_rate=0.0,
    )
    keys = emulator_keys(corpus_config, args.queries)
    chunks = [keys[i : i + 40] for i in range(0, len(keys), 40)]
    web_photos = [] if args.no_web else photos.load(args.photos)
    web_sets = {size: webedits.tiles(web_photos, size) for size in args.web_tiles if web_photos}
    with ProcessPoolExecutor(args.workers, mp_context=get_context("spawn")) as pool:
        tile_futures = {
            size: [pool.submit(tile_job, tile, algos) for _, tile in found]
            for size, found in photo_sets.items()
        }
        emu_futures = [pool.submit(emulator_job, corpus_config, c, algos) for c in chunks]
        web_futures = {
            size: [
                pool.submit(webedits.tile_job, tile, seed) for seed, (_, tile) in enumerate(found)
            ]
            for size, found in web_sets.items()
        }
        tile_hashes = {size: [f.result() for f in fs] for size, fs in tile_futures.items()}
        emu_rows = [row for f in emu_futures for row in f.result()]
        web_hashes = {size: [f.result() for f in fs] for size, fs in web_futures.items()}
    radii = sorted({4, DEFAULT_NEAR_DUP_DISTANCE, 8})
    web = {
        "photos": [name for name, _ in web_photos],
        "radii": radii,
        "sets": {
            f"{size} px": {
                method: webedits.evaluate([t[method] for t in per_tile], radii)
                for method in NEAR_DUP_METHODS
            }
            for size, per_tile in web_hashes.items()
        },
    }

    sets: dict[str, dict[str, Any]] = {}
    for algo in algos:
        sets[algo] = {}
        for size, per_tile in tile_hashes.items():
            real = HashSet()
            for group, hashes in enumerate(per_tile):
                by_algo = hashes[algo]
                refs = {k: real.add(by_algo[k], group) for k in ("ref jpeg", "ref png")}
                for name in TRANSFORMS:
                    copy = real.add(by_algo[name], group)
                    real.pairs.setdefault(name, []).append((copy, refs[reference_of(name)]))
            sets[algo][f"photos {size} px"] = evaluate(real)
        emu = HashSet()
        originals = {base: emu.add(h[algo], base) for base, v, h in emu_rows if v == "original"}
        for base, variant, h in emu_rows:
            if variant != "original":
                emu.pairs.setdefault(variant, []).append((emu.add(h[algo], base), originals[base]))
        sets[algo]["emulator"] = evaluate(emu)
    chosen = {algo: choose(sets[algo].values()) for algo in algos}
    return {
        "command": " ".join(["python -m benchmarks.threshold", *args.argv]),
        "min_precision": MIN_PRECISION,
        "tiles": {size: [name for name, _ in found] for size, found in photo_sets.items()},
        "algos": algos,
        "chosen": chosen,
        "results": sets,
        "web": web,
        "seconds": round(time.perf_counter() - started, 1),
    }


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def _rate(fp: int, negatives: int) -> str:
    if fp == 0:
        # No false merge seen: the rule of three bounds the rate at 95 % confidence.
        return f"< {3 / max(negatives, 1):.0e}"
    return f"{fp / negatives:.0e}"


def render(result: dict[str, Any]) -> str:
    """Markdown tables: precision per d, recall per transform around the choice, other algos."""
    algo = result["algos"][0]
    d0 = result["chosen"][algo]
    sets: dict[str, dict[str, Any]] = result["results"][algo]
    lines = [f"Command: `{result['command']}` ({result['seconds']} s), hash {algo}.", ""]
    for name, res in sets.items():
        lines.append(
            f"- {name}: {res['pictures']} distinct pictures, {res['copies']} transformed copies, "
            f"{res['negative_pairs']:,} pairs of different pictures (closest: "
            f"{res['closest_different_pictures']} bits)."
        )
    lines += [
        "",
        f"Chosen: **d = {d0}**, the largest distance with precision >= {MIN_PRECISION} on "
        "every set (the smallest of the distances that measure the same).",
        "",
        "| d | "
        + " | ".join(f"{n}: false merges | {n}: precision | {n}: recall" for n in sets)
        + " |",
        "|---:|" + "---:|---:|---:|" * len(sets),
    ]
    for d in range(MAX_D + 1):
        cells = []
        for res in sets.values():
            rate = _rate(res["false_merges"][d], res["negative_pairs"])
            cells.append(
                f"{res['false_merges'][d]} ({rate}) | {res['precision'][d]:.4f} | "
                f"{_pct(res['true_merges'][d] / max(res['copies'], 1))} %"
            )
        mark = " **(default)**" if d == d0 else ""
        lines.append(f"| {d}{mark} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "False merges: pairs of different pictures within d (in brackets, per pair of different "
        "pictures; `<` is the 95 % bound when none was seen). Recall: over every transform.",
    ]
    cols = [d for d in range(d0 - 2, d0 + 4) if 0 <= d <= MAX_D]
    lines += [
        "",
        f"Recall (%) per transform at d = {', '.join(map(str, cols))}:",
        "",
        "| set | transform | " + " | ".join(f"d={d}" for d in cols) + " |",
        "|---|---|" + "---:|" * len(cols),
    ]
    for set_name, res in sets.items():
        for name, rec in res["recall"].items():
            cells_ = " | ".join(_pct(rec[d]) for d in cols)
            lines.append(f"| {set_name} | {name} | {cells_} |")
    if len(result["algos"]) > 1:
        photos = [n for n in sets if n.startswith("photos")]
        lines += [
            "",
            "Every algorithm by the same rule (recall over all photo transforms):",
            "",
            "| algorithm | chosen d | "
            + " | ".join(f"{n}: recall at chosen d | {n}: worst transform" for n in photos)
            + " | emulator: recall at chosen d |",
            "|---|---:|" + "---:|---|" * len(photos) + "---:|",
        ]
        for other in result["algos"]:
            res_all = result["results"][other]
            d = result["chosen"][other]
            cells = []
            for n in photos:
                ph = res_all[n]
                worst = min(ph["recall"].items(), key=lambda kv: kv[1][d])
                cells.append(
                    f"{_pct(ph['true_merges'][d] / ph['copies'])} % | "
                    f"{worst[0]} ({_pct(worst[1][d])} %)"
                )
            emu = res_all["emulator"]
            lines.append(
                f"| {other} | {d} | " + " | ".join(cells) + " | "
                f"{_pct(emu['true_merges'][d] / max(emu['copies'], 1))} % |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.threshold",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--algos",
        type=lambda s: [a.strip() for a in s.split(",") if a.strip()],
        default=["phash"],
        help=f"comma-separated, the first one decides the table; of {', '.join(HASH_ALGOS)}",
    )
    p.add_argument(
        "--tiles",
        type=lambda s: [int(x) for x in s.split(",") if x.strip()],
        default=[256, 128],
        help="tile sides in pixels, one photo set each (default 256,128)",
    )
    p.add_argument("--queries", type=int, default=6, help="emulator queries (default 6)")
    p.add_argument("--results", type=int, default=160, help="results per query (default 160)")
    p.add_argument("--seed", type=int, default=0, help="emulator corpus seed")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument(
        "--web-tiles",
        type=lambda s: [int(x) for x in s.split(",") if x.strip()],
        default=[256, 192, 128],
        help="tile sides of the evaluation set, one set each (default 256,192,128)",
    )
    p.add_argument(
        "--photos", type=Path, help="the evaluation photographs (python -m benchmarks.photos)"
    )
    p.add_argument("--no-web", action="store_true", help="leave the evaluation set out")
    p.add_argument("--json", type=Path, help="write every number to this file")
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    unknown = [a for a in args.algos if a not in HASH_ALGOS]
    if unknown or not args.algos:
        p.error(f"--algos: unknown {unknown}; choose from {', '.join(HASH_ALGOS)}")
    if not args.tiles or min(args.tiles) < 64:
        p.error("--tiles must be at least 64 pixels")
    try:
        result = run(args)
    except (MissingPackage, photos.MissingPhotos) as exc:
        print(f"benchmarks.threshold: {exc}", file=sys.stderr)
        return 2
    print(render(result))
    if result["web"]["sets"]:
        print()
        print(webedits.render(result["web"], DEFAULT_NEAR_DUP_DISTANCE))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
