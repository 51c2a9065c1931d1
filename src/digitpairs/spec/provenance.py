"""The code that makes a run: package version, a hash of the code that decides its numbers, and the git commit
where there is one.

The hash covers the files that decide what a run computes (NUMBERS below: the data's pairs, the kernels, the
models, the engine, the device settings, and the Config's and the architectures' meaning), each by its path and
bytes, so two runs with the same hash computed the same way even where no git checkout exists (an installed wheel)
or the checkout had uncommitted changes. The command line's texts, the study files' parser, the store, the report
and the docs are left out: editing them neither voids a checkpoint (checkpoints are keyed by this hash) nor makes a
report warn that a study mixes code versions.
"""

import functools
import hashlib
import importlib.metadata
import subprocess
import sys
from pathlib import Path

from digitpairs.base.version import __version__

PACKAGE = Path(__file__).resolve().parent.parent
NUMBERS = ("data/mnist.py", "data/pairs.py", "device.py", "engine", "kernels", "model", "spec/arch.py",
           "spec/config.py", "spec/registry.py", "spec/shapes.py")  # relative to the package: files or folders
SUFFIXES = (".py", ".c", ".h")


def source_files(root: Path = PACKAGE) -> list[Path]:
    """The files the hash covers, in a fixed order (relative paths, sorted)."""
    files = []
    for name in NUMBERS:
        path = root / name
        files += [f for f in path.rglob("*") if f.suffix in SUFFIXES] if path.is_dir() else [path] * path.is_file()
    return sorted((f for f in files if "__pycache__" not in f.parts), key=lambda f: f.relative_to(root).as_posix())


def code_hash(root: Path = PACKAGE) -> str:
    """sha256 over each file's relative path and bytes, first 12 hex digits."""
    h = hashlib.sha256()
    for f in source_files(root):
        h.update(f.relative_to(root).as_posix().encode() + b"\0")
        h.update(f.read_bytes())
        h.update(b"\0")
    return h.hexdigest()[:12]


def git_commit(root: Path = PACKAGE) -> str | None:
    """The commit checked out where the package lives, or None (no git, not a checkout, any failure)."""
    try:
        p = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                           timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = p.stdout.strip()
    return commit if p.returncode == 0 and len(commit) in (40, 64) else None


@functools.cache
def _code() -> dict:
    return {"package_version": __version__, "code_hash": code_hash(), "git_commit": git_commit()}


def code_version() -> dict:
    """What each stored run records about its code (the hash and commit computed once per process), and the torch
    version this process runs."""
    return _code() | {"torch_version": torch_version()}


def torch_version() -> str:
    """The version of the torch this process has imported (every process that trains has), else of the installed
    one: asked without importing torch."""
    torch = sys.modules.get("torch")
    if torch is not None:
        return torch.__version__
    try:
        return importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return "(not installed)"
