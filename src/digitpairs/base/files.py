"""Writing files so that nothing already stored is lost or half-written: the writability probe and atomic writes."""

import os
import tempfile
from pathlib import Path

from digitpairs.base.errors import UserError, reason


def probe(folder: Path) -> None:
    """OSError unless a file can be made in the folder: a temporary one of this process's own, gone at once (two
    processes may probe one folder at once)."""
    with tempfile.TemporaryFile(dir=folder, prefix=".digitpairs-probe-"):
        pass


def writable_dir(folder: Path, what: str, fix: str) -> Path:
    """Create folder (and its parents) if needed and check that a file can be written there, before any long work.
    The probe is a temporary file of this process's own, so two processes may check one folder at once. An
    OSError is a UserError: "cannot write to {what} {folder} (why): {fix}"."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe(folder)
    except OSError as e:
        raise UserError(f"cannot write {what} {folder} ({reason(e)}): {fix}") from None
    return folder


def atomic_write(path: Path, data: bytes | str, fsync: bool = False) -> None:
    """Write data through a temporary file in the same folder, then rename it over path: a reader sees the old file
    or the new one, never half of one, and a failure leaves the old file whole. fsync: the file's bytes and then
    the folder's entry reach the disk before this returns (a power cut leaves one of the two files whole)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if isinstance(data, bytes) else "w", **({} if isinstance(data, bytes) else
                                                                          {"newline": ""})) as f:
            f.write(data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if fsync:
        sync_folder(path.parent)


def sync_folder(folder: Path) -> None:
    """fsync a folder, so that a rename in it survives a power cut (where the system allows it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # a filesystem that does not sync folders
        pass
    finally:
        os.close(fd)
