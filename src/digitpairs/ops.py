"""Fast CPU kernels for what PyTorch does slowly in this network: 2x2 max-pooling and the first convolution (here),
BatchNorm + ReLU (bnrelu.py); their C source is kernels.py.

`max_pool2x2(x)` is `F.max_pool2d(x, 2)` with the same values and the same gradient. On CPU, for float32 and
bfloat16 in NCHW or channels_last, a C kernel makes one pass over the input and keeps a compact argmax (uint8,
0..3, at pooled resolution); the backward writes every element of the input's gradient in one pass (no separate
zero-fill, which made F.max_pool2d's backward slow).

`conv_pool2x2(x, weight, bias, padding, groups)` is `max_pool2x2(F.conv2d(x, weight, bias, padding=padding,
groups=groups))`. Where each group has one input channel (the branch's first convolution: one image per member)
and a multiple of 16 output channels, one C kernel computes the convolution and pools it without writing the
full-resolution map, and its backward computes the weights' gradient from the pooled gradient and the argmax.
Its sums are in float32 in a fixed order (oneDNN sums in another, so the values agree to rounding); under bf16
autocast the image, weights and bias are rounded to bfloat16 first and the output is bfloat16, as autocast's
convolution does (on CPUs with AVX512-BF16 the exact bfloat16 products are added in pairs, vdpbf16ps, so such a
CPU's sums differ from another's in order). The image gets no gradient (it is data); one that needs a gradient
takes the unfused path.

Tie rule, F.max_pool2d's on CPU: the window is scanned in the order (0,0), (0,1), (1,0), (1,1); an element
replaces the running maximum if it is greater, or NaN. So among equal maxima the first in scan order takes the
gradient, and a window with a NaN gives NaN (its last NaN takes the gradient). Odd sides are floored as F.max_pool2d
does: the last row or column is never a maximum and gets zero gradient. One exception, in conv_pool2x2 under bf16
autocast: it compares a window's four sums in float32 and rounds the maximum to bfloat16 afterwards, where autocast's
convolution rounds each output first and the pooling then compares the rounded values. The pooled values are the
same; where two sums differ in float32 but round to the same bfloat16, the gradient may go to another element of the
window (seen in 3 of 2304 windows of a random first layer). It is deterministic, and training is unaffected beyond
rounding (docs/benchmarks.md: the paired check of old and new engines).

Anything else (CUDA tensors, other dtypes or layouts, a machine without a C compiler) goes to F.max_pool2d and
F.conv2d: the choice depends on the device, dtypes and shapes only, never on timing or thread counts, so the same
command gives the same numbers. The kernels (kernels.py) are compiled once per machine with the system's C compiler
(`$CC`, else `cc`) into $DIGITPAIRS_CACHE/ops or ~/.cache/digitpairs/ops, keyed by source, flags and CPU, with
its SHA-256 beside it (a file that fails it is built again, never loaded: a truncated one would kill the process),
and called through ctypes, which releases the GIL: the engine's threads run them at the same time. Each call is
single-threaded, as the engine runs each group on one torch thread.
"""

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.autograd.profiler import record_function

from digitpairs.kernels import SOURCE

# no -ffast-math: NaN must compare as NaN; contraction into fused multiply-adds is allowed (the sums' order is fixed)
FLAGS = ["-O3", "-march=native", "-ffp-contract=fast", "-shared", "-fPIC", "-std=c99"]
DTYPES = {torch.float32: "f32", torch.bfloat16: "bf16"}
LANES, MAX_KERNEL = 16, 7  # the conv kernel's channel block (kernels.py) and its largest kernel side


def cache_dir() -> Path:
    """$DIGITPAIRS_CACHE/ops, else ~/.cache/digitpairs/ops: beside the MNIST cache."""
    env = os.environ.get("DIGITPAIRS_CACHE")
    return (Path(env) if env else Path.home() / ".cache" / "digitpairs") / "ops"


def _cpu_id() -> str:
    """What -march=native compiles for: the CPU's model and flags (a shared home may serve several machines)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return "\n".join(sorted({ln for ln in lines if ln.startswith(("model name", "flags", "Features"))}))
    except OSError:
        return platform.machine() + platform.processor()


def _digest(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _build(cc: str, flags: list[str], path: Path) -> bool:
    """Compile SOURCE into path and record its SHA-256 in path.sha256, each atomically: written in a temporary
    folder beside them, then renamed (a build killed midway leaves neither name half-written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        src, lib, sha = Path(tmp) / "ops.c", Path(tmp) / "ops.so", Path(tmp) / "ops.so.sha256"
        src.write_text(SOURCE)
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
        key = hashlib.sha256("\0".join([SOURCE, cc, *flags, _cpu_id()]).encode()).hexdigest()[:16]
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


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


# ---- 2x2 max-pooling ----

def _layout(x: torch.Tensor) -> str | None:
    """"nchw" or "nhwc" when x's memory is one of those layouts without gaps; None otherwise."""
    if x.is_contiguous():
        return "nchw"
    if x.is_contiguous(memory_format=torch.channels_last):
        return "nhwc"
    return None


def _poolable(x: torch.Tensor) -> bool:
    """Whether the C kernels take x (else F.max_pool2d)."""
    return (x.device.type == "cpu" and x.dim() == 4 and x.dtype in DTYPES and x.shape[-1] >= 2 and x.shape[-2] >= 2
            and x.numel() > 0 and _layout(x) is not None and library() is not None)


def _dims(x: torch.Tensor, layout: str) -> list[int]:
    n, c, h, w = x.shape
    return [n, h, w, c] if layout == "nhwc" else [n * c, h, w]


def _format(layout: str) -> torch.memory_format:
    return torch.channels_last if layout == "nhwc" else torch.contiguous_format


def _pool(x: torch.Tensor, with_index: bool):
    """(N, C, H, W) -> (N, C, H//2, W//2) in x's layout, and the uint8 argmax (or None)."""
    layout = _layout(x)
    n, c, h, w = x.shape
    out = torch.empty((n, c, h // 2, w // 2), dtype=x.dtype, memory_format=_format(layout))
    idx = torch.empty(out.shape, dtype=torch.uint8, memory_format=_format(layout)) if with_index else None
    getattr(library(), f"pool_{layout}_{DTYPES[x.dtype]}")(x.data_ptr(), out.data_ptr(), _ptr(idx), *_dims(x, layout))
    return out, idx


class _MaxPool2x2(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        out, idx = _pool(x, with_index=True)
        ctx.save_for_backward(idx)
        ctx.in_shape, ctx.layout = x.shape, _layout(x)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        (idx,) = ctx.saved_tensors
        g = g.contiguous(memory_format=_format(ctx.layout))
        gx = torch.empty(ctx.in_shape, dtype=g.dtype, memory_format=_format(ctx.layout))  # every element written
        getattr(library(), f"unpool_{ctx.layout}_{DTYPES[g.dtype]}")(g.data_ptr(), idx.data_ptr(), gx.data_ptr(),
                                                                      *_dims(gx, ctx.layout))
        return gx


def max_pool2x2(x: torch.Tensor) -> torch.Tensor:
    """F.max_pool2d(x, 2): the same values and the same gradient (module docstring), at memory speed on CPU."""
    if not _poolable(x):
        return F.max_pool2d(x, 2)
    if torch.is_grad_enabled() and x.requires_grad:
        return _MaxPool2x2.apply(x)
    with record_function("ops::max_pool2x2"):  # a ctypes call is no torch op: named for the profiler
        return _pool(x, with_index=False)[0]


# ---- a convolution from one channel per group, fused with the pooling ----

def _conv_mode(x: torch.Tensor, weight: torch.Tensor, groups: int, padding: int) -> str | None:
    """"f32" or "bf16" (autocast) when the fused kernel takes this convolution; None otherwise."""
    kc, cin, ks, ks2 = weight.shape
    if (x.device.type != "cpu" or x.dim() != 4 or x.dtype != torch.float32 or weight.dtype != torch.float32
            or x.requires_grad or cin != 1 or x.shape[1] != groups or (kc // groups) % LANES or ks != ks2
            or ks > MAX_KERNEL or min(x.shape[-2:]) + 2 * padding - ks + 1 < 2 or x.shape[-1] != x.shape[-2]
            or library() is None):
        return None
    if not torch.is_autocast_enabled("cpu"):
        return "f32"
    return "bf16" if torch.get_autocast_dtype("cpu") == torch.bfloat16 else None


def _conv_inputs(x, weight, bias, padding: int, mode: str):
    """The kernel's operands: the padded image (N, K, S, S) in the mode's dtype, the taps (K, ks, ks, C) and the
    bias (K, C) in float32, holding bfloat16 values in bf16 mode."""
    k = x.shape[1]
    ks = weight.shape[-1]
    rnd = (lambda t: t.to(torch.bfloat16).float()) if mode == "bf16" else (lambda t: t)
    xs = (F.pad(x, [padding] * 4) if padding else x).to(torch.bfloat16 if mode == "bf16" else x.dtype).contiguous()
    taps = rnd(weight.detach()).reshape(k, -1, ks, ks).permute(0, 2, 3, 1).contiguous()
    b = None if bias is None else rnd(bias.detach()).reshape(k, -1).contiguous()
    return xs, taps, b


def _conv_pool(xs, taps, b, mode: str, with_index: bool):
    n, k, s, _ = xs.shape
    ks, c = taps.shape[1], taps.shape[3]
    side = (s - ks + 1) // 2
    dtype = torch.bfloat16 if mode == "bf16" else torch.float32
    out = torch.empty((n, k * c, side, side), dtype=dtype, memory_format=torch.channels_last)
    idx = torch.empty(out.shape, dtype=torch.uint8, memory_format=torch.channels_last) if with_index else None
    getattr(library(), f"conv_pool_{mode}")(xs.data_ptr(), taps.data_ptr(), _ptr(b), out.data_ptr(), _ptr(idx),
                                            n, k, s, ks, c)
    return out, idx


class _ConvPool2x2(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, padding: int, mode: str):
        xs, taps, b = _conv_inputs(x, weight, bias, padding, mode)
        out, idx = _conv_pool(xs, taps, b, mode, with_index=True)
        ctx.save_for_backward(xs, idx)
        ctx.mode, ctx.weight_shape, ctx.bias = mode, weight.shape, bias is not None
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        xs, idx = ctx.saved_tensors
        n, k, s, _ = xs.shape
        kc, _, ks, _ = ctx.weight_shape
        g = g.to(torch.bfloat16 if ctx.mode == "bf16" else torch.float32).contiguous(memory_format=torch.channels_last)
        gw = torch.empty(k, ks * ks, kc // k)  # (K, taps, C): every element written
        gb = torch.empty(k, kc // k) if ctx.bias else None
        getattr(library(), f"conv_pool_grad_{ctx.mode}")(xs.data_ptr(), g.data_ptr(), idx.data_ptr(), gw.data_ptr(),
                                                          _ptr(gb), n, k, s, ks, kc // k)
        gw = gw.transpose(1, 2).reshape(ctx.weight_shape)
        return None, gw, None if gb is None else gb.reshape(-1), None, None


def conv_pool2x2(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: int, groups: int,
                 channels_last: bool = True) -> torch.Tensor:
    """max_pool2x2(F.conv2d(x, weight, bias, padding=padding, groups=groups)), fused where the kernel applies
    (module docstring). channels_last: the memory format of an unfused convolution (speed only)."""
    mode = _conv_mode(x, weight, groups, padding)
    if mode is None:
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return max_pool2x2(F.conv2d(x, weight, bias, padding=padding, groups=groups))
    if torch.is_grad_enabled() and (weight.requires_grad or (bias is not None and bias.requires_grad)):
        return _ConvPool2x2.apply(x, weight, bias, padding, mode)
    with record_function("ops::conv_pool2x2"):
        return _conv_pool(*_conv_inputs(x, weight, bias, padding, mode), mode, with_index=False)[0]
