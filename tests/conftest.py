"""The fixtures the tests share; the helpers they share are in tests/support.py."""

from pathlib import Path

import pytest

from digitpairs.data import mnist


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    """The real, verified MNIST (fetched into the user's cache on first use)."""
    return mnist.fetch(log=lambda *a: None)
