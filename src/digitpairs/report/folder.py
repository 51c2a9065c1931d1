"""A report's folder replaced as a whole: a reader sees the old report or the new one (or, for the moment between
two renames, neither), never a mix, and a file of the old one that the new one lacks (a sweep's figure) does not stay
behind.

The report is built in a folder of this process's own beside its folder, and then:
- where the folder holds a report alone (the files its manifest lists, or nothing: a folder digitpairs made), the two
  are swapped by two renames, the old one then deleted; of two processes that swap at once (a study shared by two),
  the second's report stands whole;
- where it holds files of the user's too (`--out .`), the report's files are renamed into it one by one and those
  of the old report that the new one lacks are deleted; the user's files stay.
The manifest, MANIFEST, lists the report's files.
"""

import os
import shutil
import tempfile
from pathlib import Path

from digitpairs.base.files import atomic_write
from digitpairs.base.procfs import TOKEN

MANIFEST = ".digitpairs-report"


def staging(out: Path) -> Path:
    """A new folder of this process's own to build the report in: beside `out` where its parent is writable (so it
    can be swapped in whole), else inside it."""
    try:
        work = Path(tempfile.mkdtemp(prefix=f".{out.name}.{TOKEN}.", dir=out.parent))
    except OSError:
        work = Path(tempfile.mkdtemp(prefix=".report-", dir=out))
    umask = os.umask(0)
    os.umask(umask)
    work.chmod(0o777 & ~umask)  # a report folder as any other (mkdtemp makes it the owner's alone)
    return work


def replace(out: Path, work: Path) -> None:
    """Put the report built in `work` (staging()) in place of the one in `out`, as the module says."""
    files = sorted(f.name for f in work.iterdir())
    (work / MANIFEST).write_text("".join(f"{name}\n" for name in files))
    try:
        if work.parent == out.parent and report_alone(out):
            try:
                swap(out, work)
                return
            except OSError:  # the folder cannot be renamed (a mount point, a folder it may not move): file by file
                pass
        for name in files:
            os.replace(work / name, out / name)
        for name in listed(out) - set(files):  # the old report's, that the new one lacks
            (out / name).unlink(missing_ok=True)
        atomic_write(out / MANIFEST, (work / MANIFEST).read_text())
    finally:
        shutil.rmtree(work, ignore_errors=True)


def swap(out: Path, work: Path) -> None:
    """out renamed aside, work renamed to out, the old one deleted."""
    old = work.with_name(work.name + ".old")
    try:
        out.rename(old)
    except FileNotFoundError:  # another process is swapping its report in: this one follows it
        pass
    try:
        work.rename(out)
    except OSError:  # the other process's report is in place already, and as recent: it stands
        pass
    shutil.rmtree(old, ignore_errors=True)


def report_alone(out: Path) -> bool:
    """Whether the folder holds nothing but a report (its manifest's files) and the folders reports are built in."""
    if out.is_symlink():  # the folder it names is the user's: its files are replaced, the link stays
        return False
    names = {p.name for p in out.iterdir() if not p.name.startswith(".report-")} if out.is_dir() else set()
    return names <= listed(out) | {MANIFEST}


def listed(out: Path) -> set[str]:
    """The files of the report in the folder, as its manifest lists them (none without one)."""
    try:
        return {line for line in (out / MANIFEST).read_text().splitlines() if line and "/" not in line}
    except OSError:
        return set()
