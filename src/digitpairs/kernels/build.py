"""Building the C kernels (kernels/csrc) once per machine and loading them through ctypes.

The C files are package data, joined in the order of PARTS into one translation unit (source()); the constants the
Python side shares with them (LANES, MAX_KERNEL here, batchnorm.MAX_C) are read from their `#define`s (define()).

They are compiled with the system's C compiler (`$CC`, split as a shell would: `CC="ccache gcc"` works; else `cc`) into $DIGITPAIRS_CACHE/ops or
~/.cache/digitpairs/ops, keyed by source, flags and CPU, with its SHA-256 beside it (a file that fails it is built
again, never loaded: a truncated one would kill the process), and called through ctypes, which releases the GIL: the
engine's threads run them at the same time. Each call is single-threaded, as the engine runs each group on one torch
thread. Without a working compiler, library() is None and every operator takes PyTorch's path: the process says
so in one warning line (why, and that PyTorch's operators run instead, whose sums differ in the last bits), and every
run it trains records which path trained it (used()).
"""

import ctypes
import functools
import hashlib
import math
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from importlib import resources
from pathlib import Path

import torch

from digitpairs.base.errors import first_line
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
    """What -march=native compiles for: the CPU's model and features, so that a cache folder shared by machines of
    several kinds (a home folder) gives each its own build: /proc/cpuinfo on Linux, sysctl's machdep.cpu and
    hw.optional lines on macOS, else the platform's description of the processor."""
    lines = cpuinfo().splitlines()
    if lines:
        return "\n".join(sorted({ln for ln in lines if ln.startswith(("model name", "flags", "Features"))}))
    try:
        out = subprocess.run(["sysctl", "-a"], capture_output=True, text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        out = ""
    features = sorted(ln for ln in out.splitlines() if ln.startswith(("machdep.cpu.", "hw.optional.")))
    return "\n".join([*platform.uname(), *features])


def _digest(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _build(cc: list[str], flags: list[str], path: Path) -> str:
    """Compile source() into path and record its SHA-256 in path.sha256, each atomically: written in a temporary
    folder beside them, then renamed (a build killed midway leaves neither name half-written). Returns "" where it
    built, else why not (the compiler's first line of error)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        src, lib, sha = Path(tmp) / "ops.c", Path(tmp) / "ops.so", Path(tmp) / "ops.so.sha256"
        src.write_text(source(), encoding="utf-8")
        done = subprocess.run([*cc, *flags, str(src), "-o", str(lib)], check=False, capture_output=True, text=True,
                              timeout=BUILD_S)
        if done.returncode != 0:
            errors = [line for line in (done.stderr or "").splitlines() if "error" in line.lower()] or [done.stderr]
            return f"{' '.join(cc)} failed: {first_line(errors[0] or f'exit code {done.returncode}')}"
        sha.write_text(_digest(lib))
        os.replace(lib, path)
        os.replace(sha, f"{path}.sha256")  # after the library: a reader in between sees a mismatch and rebuilds
    return ""


def _load(path: Path) -> ctypes.CDLL | None:
    """The library at path if its bytes match the digest its build recorded and it has every kernel, else None.
    A file that fails the check is never loaded: a truncated one kills the process (SIGBUS) in ctypes."""
    try:
        if Path(f"{path}.sha256").read_bytes() != _digest(path).encode():
            return None
        return _declare(ctypes.CDLL(str(path)))
    except (OSError, AttributeError):  # missing or unreadable; not a library; another library (a kernel missing)
        return None


BUILD_S = 120  # a compiler that takes longer is taken to hang


def compiler() -> list[str] | None:
    """The C compiler's command: $CC split as a shell would (CC="ccache gcc"), else cc, gcc or clang on PATH."""
    if os.environ.get("CC", "").strip():
        try:
            return shlex.split(os.environ["CC"])
        except ValueError:  # an unclosed quote: no compiler (said in the warning)
            return None
    found = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    return [found] if found else None


@functools.cache
def library() -> ctypes.CDLL | None:
    """The compiled kernels, built on first use; None where they cannot be (PyTorch's ops then), said once in a
    warning line on stderr."""
    lib, why = _library()
    if lib is None:
        print(f"digitpairs: warning: the C kernels could not be built ({why}): PyTorch's operators run instead "
              "(the same networks, summed in another order: numbers differ in the last bits; runs record which "
              "path trained them)", file=sys.stderr, flush=True)
    return lib


def _library() -> tuple[ctypes.CDLL | None, str]:
    cc = compiler()
    if cc is None:
        return None, "no C compiler: set CC (a command, quoted as a shell would), or install cc"
    why = ""
    for flags in (FLAGS, [f for f in FLAGS if f != "-march=native"]):  # some compilers lack -march=native
        key = hashlib.sha256("\0".join([source(), " ".join(cc), *flags, _cpu_id()]).encode()).hexdigest()[:16]
        path = cache_dir() / f"ops-{key}.so"
        lib = _load(path)  # None where the cache lacks it or holds a damaged or foreign file: built again
        if lib is not None:
            return lib, ""
        try:
            why = _build(cc, flags, path)
            if not why:  # None where even this fails (or dlopen gives back a foreign one loaded above)
                lib = _load(path)
                return lib, "" if lib is not None else f"the library built in {cache_dir()} does not load"
        except subprocess.TimeoutExpired:
            why = f"{' '.join(cc)} took more than {BUILD_S} s"
        except OSError as e:  # an unwritable cache, a compiler that cannot be started
            why = f"{e.filename or cache_dir()}: {e.strerror or e}"
    return None, why


def used(device) -> str:
    """Which operators train on this device: the compiled kernels (the CPU, where they built) or PyTorch's."""
    return "compiled kernels" if device.type == "cpu" and library() is not None else "PyTorch's operators"


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
