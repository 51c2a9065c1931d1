import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from digitpairs import UserError
from digitpairs.data import mnist
from digitpairs.spec import studyfile


def write_idx(path: Path, array: np.ndarray) -> Path:
    """Write a uint8 array as an IDX file (magic 0x0801 for 1-d labels, 0x0803 for 3-d images)."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())
    return path


def fake_mnist(n_train=400, n_test=200, seed=0) -> dict:
    """MNIST-shaped random data with digit-dependent brightness, so that digits can be learned a little."""
    rng = np.random.default_rng(seed)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = rng.integers(0, 40, (n, 28, 28)).astype(np.uint8)
        for d in range(10):  # digit d lights up a band of rows
            images[labels == d, 2 * d + 4: 2 * d + 8, 6:22] = 250
        out[f"{split}_images"], out[f"{split}_labels"] = images, labels
    return out


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    """The real, verified MNIST (fetched into the user's cache on first use)."""
    return mnist.fetch(log=lambda *a: None)


def run_cli(*args, env=None, timeout=600, cwd=None):
    """Run `python -m digitpairs ARGS` in a subprocess (in the folder cwd); return the CompletedProcess (text)."""
    return subprocess.run([sys.executable, "-m", "digitpairs", *map(str, args)], capture_output=True, text=True, check=False,
                          env=env, timeout=timeout, cwd=cwd)


def write_study(tmp_path: Path, text: str) -> Path:
    """A study file study.toml with this text."""
    path = tmp_path / "study.toml"
    path.write_text(text)
    return path


def assert_study_refused(tmp_path: Path, text: str, expected: str) -> None:
    """Loading a study file with this text is one line that names the file and says `expected`."""
    path = write_study(tmp_path, text)
    with pytest.raises(UserError, match=re.escape(expected)) as e:
        studyfile.load(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)
