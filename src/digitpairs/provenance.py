"""The code that makes a run: package version, a hash of the package's source, and the git commit where there is one;
and the report's table of the code versions and devices behind a study's runs.

The hash covers every *.py file of the package and the shipped studies/*.toml, so two runs with the same hash ran
the same code even where no git checkout exists (an installed wheel) or the checkout had uncommitted changes.
"""

import collections
import functools
import hashlib
import subprocess
from pathlib import Path

from digitpairs import __version__

PACKAGE = Path(__file__).resolve().parent


def source_files(root: Path = PACKAGE) -> list[Path]:
    """The files the hash covers, in a fixed order (relative paths, sorted)."""
    files = [*root.rglob("*.py"), *(root / "studies").glob("*.toml")]
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
def code_version() -> dict:
    """What each stored run records about its code (computed once per process)."""
    return {"package_version": __version__, "code_hash": code_hash(), "git_commit": git_commit()}


def _device(run: dict) -> str:
    """The run's device, and the run options it trained with where they were on."""
    cfg = (run.get("config") or {}).get("config") or {}
    options = [text for key, text in (("cuda_graphs", "CUDA graphs"), ("matmul_conv", "matmul convolutions"))
               if cfg.get(key)]
    return ", ".join([run["device"] or "(not recorded)", *options])


def provenance_blocks(runs: list[dict]) -> list[tuple]:
    """The code versions and devices that made the runs, with a warning where a study mixes code versions."""
    count = collections.Counter((r["package_version"], r["code_hash"] or "(not recorded)", (r["git_commit"] or "")[:12],
                                 r["torch_version"], _device(r)) for r in runs)
    blocks = [("h2", "Code and devices"),
              ("table", ["digitpairs", "Code hash", "Git commit", "torch", "Device", "Runs"],
               [[*key, str(n)] for key, n in sorted(count.items())])]
    codes = {key[:2] for key in count}
    if len(codes) > 1:
        blocks += [("p", (f"Warning: this study mixes runs of {len(codes)} code versions (digitpairs version and "
                          "hash of its source files): a difference between variants may come from the code. Run the "
                          "study again under a new --study name to compare runs of one code."))]
    return blocks
