"""Building the C kernels (kernels/csrc) once per machine and loading them through ctypes.

The C files are package data, joined in the order of PARTS into one translation unit (source()); the constants the
Python side shares with them (LANES, MAX_KERNEL here, batchnorm.MAX_C) are read from their `#define`s (define()).

They are compiled with the system's C compiler (`$CC`, else `cc`) into $DIGITPAIRS_CACHE/ops or
~/.cache/digitpairs/ops, keyed by source, flags and CPU, with its SHA-256 beside it (a file that fails it is built
again, never loaded: a truncated one would kill the process), and called through ctypes, which releases the GIL: the
engine's threads run them at the same time. Each call is single-threaded, as the engine runs each group on one torch
thread. Without a working compiler, library() is None and every operator takes PyTorch's path.
"""

import ctypes
import functools
import hashlib
import math
import os
import platform
import re
import shutil
import subprocess
import tempfile
from importlib import resources
from pathlib import Path

import torch

from digitpairs.base.procfs import cpuinfo

# no -ffast-math: NaN must compare as NaN; contraction into fused multiply-adds is allowed (the sums' order is fixed)
FLAGS = ["-O3", "-march=native", "-ffp-contract=fast", "-shared", "-fPIC", "-std=c99"]
DTYPES = {torch.float32: "f32", torch.bfloat16: "bf16"}
PARTS = ("common.h", "pool.c", "conv_pool.c", "batchnorm.c")  # kernels/csrc, joined in this order


@functools.cache
def source() -> str:
    """The C source that library() compiles: the files of kernels/csrc joined in the order of PARTS, one
    translation unit (the .c files use common.h's definitions without including it)."""
    csrc = resources.files("digitpairs.kernels") / "csrc"
    return "".join((csrc / name).read_text(encoding="utf-8") for name in PARTS)


def define(name: str) -> int:
    """The value of the C source's `#define name <integer>`, which must be its only definition: the Python side's
    copy of a constant, never written twice."""
    found = re.findall(rf"^#define {name}\s+(\d+)\b", source(), re.MULTILINE)
    if len(found) != 1:
        raise LookupError(f"kernels/csrc defines {name} as an integer {len(found)} times, not once")
    return int(found[0])


LANES = define("LANES")  # the vectors' float lanes: the kernels' channel block
MAX_KERNEL = math.isqrt(define("MAX_TAPS"))  # the conv kernel's largest kernel side: MAX_TAPS = MAX_KERNEL ** 2


def cache_dir() -> Path:
    """$DIGITPAIRS_CACHE/ops, else ~/.cache/digitpairs/ops: beside the MNIST cache."""
    env = os.environ.get("DIGITPAIRS_CACHE")
    return (Path(env) if env else Path.home() / ".cache" / "digitpairs") / "ops"


def _cpu_id() -> str:
    """What -march=native compiles for: the CPU's model and flags (a shared home may serve several machines)."""
    lines = cpuinfo().splitlines()
    if lines:
        return "\n".join(sorted({ln for ln in lines if ln.startswith(("model name", "flags", "Features"))}))
    return platform.machine() + platform.processor()


def _digest(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _build(cc: str, flags: list[str], path: Path) -> bool:
    """Compile source() into path and record its SHA-256 in path.sha256, each atomically: written in a temporary
    folder beside them, then renamed (a build killed midway leaves neither name half-written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        src, lib, sha = Path(tmp) / "ops.c", Path(tmp) / "ops.so", Path(tmp) / "ops.so.sha256"
        src.write_text(source(), encoding="utf-8")
        done = subprocess.run([cc, *flags, str(src), "-o", str(lib)], check=False, capture_output=True, timeout=120)
        if done.returncode != 0:
            return False
        sha.write_text(_digest(lib))
        os.replace(lib, path)
        os.replace(sha, f"{path}.sha256")  # after the library: a reader in between sees a mismatch and rebuilds
    return True


def _load(path: Path) -> ctypes.CDLL | None:
    """The library at path if its bytes match the digest its build recorded and it has every kernel, else None.
    A file that fails the check is never loaded: a truncated one kills the process (SIGBUS) in ctypes."""
    try:
        if Path(f"{path}.sha256").read_bytes() != _digest(path).encode():
            return None
        return _declare(ctypes.CDLL(str(path)))
    except (OSError, AttributeError):  # missing or unreadable; not a library; another library (a kernel missing)
        return None


@functools.cache
def library() -> ctypes.CDLL | None:
    """The compiled kernels, built on first use; None where no C compiler works (PyTorch's ops then)."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        return None
    for flags in (FLAGS, [f for f in FLAGS if f != "-march=native"]):  # some compilers lack -march=native
        key = hashlib.sha256("\0".join([source(), cc, *flags, _cpu_id()]).encode()).hexdigest()[:16]
        path = cache_dir() / f"ops-{key}.so"
        lib = _load(path)  # None where the cache lacks it or holds a damaged or foreign file: built again
        if lib is not None:
            return lib
        try:
            if _build(cc, flags, path):
                return _load(path)  # None where even this fails (or dlopen gives back a foreign one loaded above)
        except (OSError, subprocess.SubprocessError):  # an unwritable cache, a compiler that hangs
            pass
    return None


def _declare(lib: ctypes.CDLL) -> ctypes.CDLL:
    ptr, i64 = ctypes.c_void_p, ctypes.c_longlong
    for name in DTYPES.values():
        for fn, args in ((f"pool_nhwc_{name}", [ptr] * 3 + [i64] * 4), (f"pool_nchw_{name}", [ptr] * 3 + [i64] * 3),
                         (f"unpool_nhwc_{name}", [ptr] * 3 + [i64] * 4), (f"unpool_nchw_{name}", [ptr] * 3 + [i64] * 3),
                         (f"conv_pool_{name}", [ptr] * 5 + [i64] * 5), (f"conv_pool_grad_{name}", [ptr] * 5 + [i64] * 5),
                         (f"bn_stats_{name}", [ptr] * 3 + [i64] * 2), (f"bn_relu_{name}", [ptr] * 4 + [i64] * 2),
                         (f"bn_relu_sums_{name}", [ptr] * 7 + [i64] * 2), (f"bn_relu_dx_{name}", [ptr] * 7 + [i64] * 2)):
            getattr(lib, fn).argtypes, getattr(lib, fn).restype = args, None
    return lib
