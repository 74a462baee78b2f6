"""Near duplicates as the web makes them: recall per edit and merges of distinct pictures.

Run as part of ``python -m benchmarks.threshold`` (the photographs come from
``python -m benchmarks.photos fetch``; see :mod:`benchmarks.photos`).

**Pictures.** The 20 evaluation photographs, scaled to at most 1024 px, cut into
non-overlapping square tiles (one set per tile side: 256 and 192 px, and 128 px as a stress
set of small, often smooth pictures). Every tile is a distinct picture; neighbouring tiles
of one photograph (two patches of sky, sand, grass) are the hard negatives. Tiles whose grey
standard deviation is below 8 are left out: blank to the eye, the same picture for any
dataset. The old tuning set (:mod:`benchmarks.threshold`) left out everything below 12.

**Copies.** Each tile is stored as JPEG quality 92 (the reference) and edited the way copies
on the web are edited, each edit's parameters drawn per tile from a seeded generator
(:func:`edit_copies`): a corner logo (2-5 % of the area, 20-35 % of the width, opaque, with
a word on it); a stock
watermark (a word across the middle, 25-40 % opaque, turned by up to 30 degrees); a caption
bar over the top or bottom 5-10 % (solid colour, with words); a crop of 1-5 % (from random
sides); a rescale to 40-90 %; a recompression at JPEG quality 30-90; a PNG and a WebP
re-encode; brightness and contrast +-10 %; a rotation by 1-2 degrees (cut back to the part
without empty corners); padding or letterbox bars (black or white, 15-50 % wider or taller);
a thumbnail of at most 160 px. Reported too, beyond the issue's list: a caption bar *added*
above or below the picture (the canvas grows by 5-10 %), as meme-style reposts do.

**Measures**, per method and tile side, at the crawl's default radius and two others:
recall per edit (the copy is judged a duplicate of its reference), and *false merges*: the
pairs of images of different pictures (references and copies alike, every pair) that the
method would merge. The decision is :func:`bingcrawl.dedup.index.near_match`, the rule the
crawl's :class:`~bingcrawl.dedup.index.DedupIndex` applies, on hashes made by the crawl's
own :func:`~bingcrawl.imaging.hashing.hash_image`.
"""

from __future__ import annotations

import io
import math
import random
from collections.abc import Sequence
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageEnhance, ImageFont

from bingcrawl.dedup.index import near_match
from bingcrawl.imaging.hashing import hash_image
from bingcrawl.records import NEAR_DUP_METHODS, Hashed

#: The edits the targets are about, in report order ("rotation" is reported, not targeted).
EDITS: Final = (
    "corner logo",
    "watermark",
    "caption bar",
    "crop 1-5%",
    "rescale 40-90%",
    "JPEG q30-90",
    "PNG",
    "WebP",
    "brightness +-10%",
    "contrast +-10%",
    "rotation 1-2 deg",
    "padding/letterbox",
    "thumbnail <=160px",
)
#: Edits measured and reported beside the targets.
EXTRA_EDITS: Final = ("caption bar added",)
UNTARGETED: Final = ("rotation 1-2 deg", *EXTRA_EDITS)

REFERENCE_QUALITY: Final = 92
MIN_TILE_STD: Final = 8.0
LONGEST_SIDE: Final = 1024
_WORDS: Final = (
    "stockphoto", "(c) Getty", "iStock", "shutterstock", "@user123", "pinterest",
    "via reddit", "Alamy", "DREAMSTIME", "www.example.com",
)  # fmt: skip

_Tile = npt.NDArray[np.uint8]


def grid_tiles(name: str, pic: Image.Image, size: int, min_std: float) -> list[tuple[str, _Tile]]:
    """Non-overlapping ``size`` px tiles of ``pic`` (a centred grid), named ``name[row,col]``;
    tiles whose grey standard deviation is below ``min_std`` (blank ones) are left out."""
    out = []
    cols, rows = pic.width // size, pic.height // size
    x0, y0 = (pic.width - cols * size) // 2, (pic.height - rows * size) // 2
    for r in range(rows):
        for c in range(cols):
            box = (x0 + c * size, y0 + r * size, x0 + (c + 1) * size, y0 + (r + 1) * size)
            tile = pic.crop(box)
            if float(np.asarray(tile.convert("L"), dtype=np.float64).std()) >= min_std:
                out.append((f"{name}[{r},{c}]", np.asarray(tile)))
    return out


def tiles(photos: Sequence[tuple[str, Image.Image]], size: int) -> list[tuple[str, _Tile]]:
    """The tiles of every photo, scaled to at most :data:`LONGEST_SIDE` px first."""
    out = []
    for name, photo in photos:
        scale = LONGEST_SIDE / max(photo.size)
        if scale < 1:
            photo = photo.resize(
                (round(photo.width * scale), round(photo.height * scale)),
                Image.Resampling.LANCZOS,
            )
        out += grid_tiles(name, photo, size, MIN_TILE_STD)
    return out


def _encode(img: Image.Image, fmt: str = "JPEG", quality: int = REFERENCE_QUALITY) -> bytes:
    buf = io.BytesIO()
    if fmt == "JPEG":
        img.convert("RGB").save(buf, "JPEG", quality=quality)
    elif fmt == "WEBP":
        img.save(buf, "WEBP", quality=quality)
    else:
        img.save(buf, "PNG")
    return buf.getvalue()


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _ink(colour: tuple[int, int, int]) -> tuple[int, int, int]:
    return (255, 255, 255) if sum(colour) < 380 else (0, 0, 0)


def _logo(img: Image.Image, rng: random.Random) -> Image.Image:
    w, h = img.size
    # A logo is wider than tall: 20-35 % of the width, its height from the area (at most a
    # fifth of the picture's height).
    area = rng.uniform(0.02, 0.05)
    lw = int(w * rng.uniform(0.20, 0.35))
    lh = min(max(8, int(w * h * area / lw)), h // 5)
    corner = rng.randrange(4)
    x = 4 if corner % 2 == 0 else w - lw - 4
    y = 4 if corner < 2 else h - lh - 4
    out = img.copy()
    draw = ImageDraw.Draw(out)
    colour = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
    draw.rounded_rectangle((x, y, x + lw, y + lh), radius=min(lw, lh) // 4, fill=colour)
    draw.text((x + 4, y + max(0, (lh - 14) // 2)), rng.choice(_WORDS), fill=_ink(colour),
              font=_font(14))  # fmt: skip
    return out


def _watermark(img: Image.Image, rng: random.Random) -> Image.Image:
    w, h = img.size
    layer = Image.new("RGBA", img.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    font = _font(max(12, w // 9))
    text = rng.choice(_WORDS)
    alpha = int(255 * rng.uniform(0.25, 0.4))
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    draw.text(((w - right + left) // 2, (h - bottom + top) // 2), text,
              fill=(255, 255, 255, alpha), font=font)  # fmt: skip
    layer = layer.rotate(rng.uniform(-30, 30), resample=Image.Resampling.BICUBIC)
    return Image.alpha_composite(img.convert("RGBA"), layer).convert("RGB")


def _caption(img: Image.Image, rng: random.Random, *, added: bool) -> Image.Image:
    w, h = img.size
    bar = int(h * rng.uniform(0.05, 0.10))
    colour = rng.choice(
        [(0, 0, 0), (255, 255, 255), (rng.randrange(256), rng.randrange(256), rng.randrange(256))]
    )
    top = rng.random() < 0.5
    if added:
        out = Image.new("RGB", (w, h + bar), colour)
        out.paste(img, (0, bar if top else 0))
        y = 0 if top else h
    else:
        out = img.copy()
        y = 0 if top else h - bar
        ImageDraw.Draw(out).rectangle((0, y, w, y + bar), fill=colour)
    words = " ".join(rng.choice(_WORDS) for _ in range(2))
    ImageDraw.Draw(out).text((6, y + max(0, (bar - 14) // 2)), words, fill=_ink(colour),
                             font=_font(14))  # fmt: skip
    return out


def _crop(img: Image.Image, rng: random.Random) -> Image.Image:
    w, h = img.size
    pct = rng.uniform(1, 5) / 100
    a, b = rng.random(), rng.random()
    dx, dy = w * pct, h * pct
    left, top = round(dx * a), round(dy * b)
    return img.crop((left, top, w - round(dx * (1 - a)), h - round(dy * (1 - b))))


def _rotate(img: Image.Image, rng: random.Random) -> Image.Image:
    angle = rng.uniform(1, 2) * rng.choice((-1, 1))
    w, h = img.size
    turned = img.rotate(angle, resample=Image.Resampling.BICUBIC, expand=False)
    m = math.ceil(max(w, h) * math.sin(math.radians(abs(angle)))) + 1
    return turned.crop((m, m, w - m, h - m))


def _pad(img: Image.Image, rng: random.Random) -> Image.Image:
    w, h = img.size
    colour = rng.choice([(0, 0, 0), (255, 255, 255)])
    if rng.random() < 0.5:  # pillarbox: bars left and right
        nw = int(w * rng.uniform(1.15, 1.5))
        out = Image.new("RGB", (nw, h), colour)
        out.paste(img, ((nw - w) // 2, 0))
    else:  # letterbox: bars above and below
        nh = int(h * rng.uniform(1.15, 1.5))
        out = Image.new("RGB", (w, nh), colour)
        out.paste(img, (0, (nh - h) // 2))
    return out


def edit_copies(tile: _Tile, seed: int) -> dict[str, bytes]:
    """The edited copies of one tile: edit name -> the copy's bytes (see the module doc)."""
    rng = random.Random(seed)
    img = Image.fromarray(tile)
    w, h = img.size

    def q() -> int:
        return rng.randint(80, 92)  # what a site re-saves an edited picture at

    scale = rng.uniform(0.4, 0.9)
    thumb = img.copy()
    thumb.thumbnail((160, 160), Image.Resampling.BICUBIC)
    return {
        "corner logo": _encode(_logo(img, rng), quality=q()),
        "watermark": _encode(_watermark(img, rng), quality=q()),
        "caption bar": _encode(_caption(img, rng, added=False), quality=q()),
        "crop 1-5%": _encode(_crop(img, rng), quality=q()),
        "rescale 40-90%": _encode(
            img.resize((round(w * scale), round(h * scale)), Image.Resampling.BICUBIC), quality=q()
        ),
        "JPEG q30-90": _encode(img, quality=rng.randint(30, 90)),
        "PNG": _encode(img, "PNG"),
        "WebP": _encode(img, "WEBP", rng.randint(70, 90)),
        "brightness +-10%": _encode(
            ImageEnhance.Brightness(img).enhance(rng.choice((0.9, 1.1))), quality=q()
        ),
        "contrast +-10%": _encode(
            ImageEnhance.Contrast(img).enhance(rng.choice((0.9, 1.1))), quality=q()
        ),
        "rotation 1-2 deg": _encode(_rotate(img, rng), quality=q()),
        "padding/letterbox": _encode(_pad(img, rng), quality=q()),
        "thumbnail <=160px": _encode(thumb, quality=rng.randint(75, 90)),
        "caption bar added": _encode(_caption(img, rng, added=True), quality=q()),
    }


_Hashes = tuple[int, int | None]  # frame, centre


def _hashes(data: bytes, method: str) -> _Hashes:
    result = hash_image(data, method=method)
    if not isinstance(result, Hashed):
        raise RuntimeError(f"could not hash a test image: {result}")
    return result.phash, result.centre


def tile_job(tile: _Tile, seed: int) -> dict[str, dict[str, _Hashes]]:
    """Hashes of a tile's reference and copies by every method: method -> image -> hashes."""
    images = {"reference": _encode(Image.fromarray(tile)), **edit_copies(tile, seed)}
    return {m: {name: _hashes(data, m) for name, data in images.items()} for m in NEAR_DUP_METHODS}


def evaluate(
    per_tile: Sequence[dict[str, _Hashes]], radii: Sequence[int]
) -> dict[str, Any]:
    """Recall per edit and false merges of one method on one set, at each radius."""
    names = ["reference", *EDITS, *EXTRA_EDITS]
    frame = np.array([t[n][0] for t in per_tile for n in names], dtype=np.uint64)
    centre_of = [t[n][1] for t in per_tile for n in names]
    centre = np.array([0 if c is None else c for c in centre_of], dtype=np.uint64)
    has = np.array([c is not None for c in centre_of], dtype=bool)
    group = np.repeat(np.arange(len(per_tile)), len(names))
    k = len(names)
    false_merges = dict.fromkeys(radii, 0)
    for i in range(frame.size - 1):  # row by row: memory stays O(n)
        other = group[i + 1 :] != group[i]
        df = np.bitwise_count(frame[i + 1 :][other] ^ frame[i])
        dc = np.bitwise_count(centre[i + 1 :][other] ^ centre[i])
        both = has[i + 1 :][other] & has[i]
        for r in radii:
            false_merges[r] += int(near_match(df, dc, both, r).sum())
    refs = np.arange(len(per_tile)) * k
    recall: dict[int, dict[str, float]] = {}
    for r in radii:
        recall[r] = {}
        for j, name in enumerate(names[1:], start=1):
            copies = refs + j
            ok = near_match(
                np.bitwise_count(frame[refs] ^ frame[copies]),
                np.bitwise_count(centre[refs] ^ centre[copies]),
                has[refs] & has[copies],
                r,
            )
            recall[r][name] = float(ok.mean())
    pairs = frame.size * (frame.size - 1) // 2 - len(per_tile) * k * (k - 1) // 2
    return {
        "pictures": len(per_tile),
        "images": int(frame.size),
        "negative_pairs": pairs,
        "false_merges": {str(r): n for r, n in false_merges.items()},
        "recall": {str(r): rec for r, rec in recall.items()},
    }


def overall(recall: dict[str, float], edits: Sequence[str] = EDITS) -> float:
    """Mean recall over ``edits`` (every listed edit has one copy per picture)."""
    return sum(recall[e] for e in edits) / len(edits)


def render(web: dict[str, Any], radius: int) -> str:
    """Markdown: per set, a row per method (false merges, overall recall), then recall per
    edit and method at ``radius``."""
    r = str(radius)
    sets: dict[str, dict[str, Any]] = web["sets"]
    methods = list(next(iter(sets.values())))
    lines = [
        f"Real-photo evaluation set ({len(web['photos'])} photographs, `python -m "
        f"benchmarks.photos`), edited as the web edits; d = {radius}:",
        "",
        "| set | method | distinct pictures merged | pairs of distinct pictures | recall, "
        "listed edits | recall, all but rotation | worst listed edit but rotation |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    targeted = [e for e in EDITS if e not in UNTARGETED]
    for set_name, by_method in sets.items():
        for method in methods:
            res = by_method[method]
            rec = res["recall"][r]
            worst = min(targeted, key=lambda e: rec[e])
            lines.append(
                f"| {set_name} ({res['pictures']} pictures) | {method} | "
                f"{res['false_merges'][r]} | {res['negative_pairs']:,} | "
                f"{100 * overall(rec):.1f} % | {100 * overall(rec, targeted):.1f} % | "
                f"{worst} ({100 * rec[worst]:.0f} %) |"
            )
    lines += ["", f"Recall (%) per edit at d = {radius}:", ""]
    header = [f"{s}: {m}" for s in sets for m in methods]
    lines += ["| edit | " + " | ".join(header) + " |", "|---|" + "---:|" * len(header)]
    for edit in (*EDITS, *EXTRA_EDITS):
        cells = [
            f"{100 * sets[s][m]['recall'][r][edit]:.0f}" for s in sets for m in methods
        ]
        lines.append(f"| {edit} | " + " | ".join(cells) + " |")
    other = [d for d in web["radii"] if d != radius]
    if other:
        lines += ["", "Other distances (false merges / recall over the listed edits):", ""]
        lines += [
            "| set | method | " + " | ".join(f"d={d}" for d in other) + " |",
            "|---|---|" + "---:|" * len(other),
        ]
        for set_name, by_method in sets.items():
            for method in methods:
                res = by_method[method]
                cells = [
                    f"{res['false_merges'][str(d)]} / {100 * overall(res['recall'][str(d)]):.1f} %"
                    for d in other
                ]
                lines.append(f"| {set_name} | {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
