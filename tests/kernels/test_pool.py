import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from digitpairs.kernels import batchnorm as bnrelu
from digitpairs.kernels import build
from digitpairs.kernels import pool as ops

LAYOUTS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}


def pooled_both_ways(x, g=None):
    """(values, input gradient) of F.max_pool2d(x, 2) and of ops.max_pool2x2(x), for the output gradient g."""
    out = []
    for pool in (lambda t: F.max_pool2d(t, 2), ops.max_pool2x2):
        xi = x.detach().clone(memory_format=torch.preserve_format).requires_grad_()
        y = pool(xi)
        y.backward(torch.randn(y.shape, generator=torch.Generator().manual_seed(1)).to(x.dtype) if g is None else g)
        out.append((y.detach(), xi.grad))
    return out


def test_the_compiled_kernels_are_there():
    """The machines this project runs on have a C compiler: the fast path is the one tested below."""
    assert ops.library() is not None


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", [(2, 3, 8, 8), (3, 16, 24, 24), (2, 37, 9, 7), (1, 48, 5, 4), (4, 1, 3, 3),
                                   (2, 20, 2, 2), (1, 5, 2, 33)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_same_values_and_gradient_as_max_pool2d(layout, shape, dtype):
    """Every channel count (the kernels work in blocks of 16 channels plus a rest), odd sides floored."""
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(dtype).contiguous(memory_format=LAYOUTS[layout])
    (y_ref, g_ref), (y, g) = pooled_both_ways(x)
    assert torch.equal(y, y_ref) and torch.equal(g, g_ref)
    assert y.is_contiguous(memory_format=LAYOUTS[layout]) and g.is_contiguous(memory_format=LAYOUTS[layout])


@pytest.mark.parametrize("layout", LAYOUTS)
def test_ties_go_to_the_first_maximum_in_scan_order(layout):
    """Many equal maxima (values 0, 1, 2): the gradient goes where F.max_pool2d sends it, the first of the window
    in the order (0,0), (0,1), (1,0), (1,1)."""
    x = torch.randint(0, 3, (4, 19, 10, 11), generator=torch.Generator().manual_seed(2)).float()
    x = x.contiguous(memory_format=LAYOUTS[layout])
    (y_ref, g_ref), (y, g) = pooled_both_ways(x, g=torch.ones(4, 19, 5, 5))
    assert torch.equal(y, y_ref) and torch.equal(g, g_ref)
    window = torch.zeros(1, 1, 2, 2).contiguous(memory_format=LAYOUTS[layout]).requires_grad_()
    ops.max_pool2x2(window).sum().backward()
    assert window.grad.flatten().tolist() == [1, 0, 0, 0]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_nan_propagates_like_max_pool2d(layout):
    x = torch.randn(2, 17, 6, 6, generator=torch.Generator().manual_seed(3))
    x[0, 1, 0, 1] = x[1, 16, 3, 2] = x[1, 16, 3, 3] = x[0, 5, 5, 5] = float("nan")
    x = x.contiguous(memory_format=LAYOUTS[layout])
    (y_ref, g_ref), (y, g) = pooled_both_ways(x)
    assert torch.equal(y.isnan(), y_ref.isnan()) and torch.equal(y.nan_to_num(), y_ref.nan_to_num())
    assert torch.equal(g, g_ref)


def test_inference_and_other_inputs_fall_back_or_match():
    x = torch.randn(3, 16, 12, 12).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        assert torch.equal(ops.max_pool2x2(x), F.max_pool2d(x, 2))
    for other in (x.double(), x.half(), x[:, :, ::2], x[0], x.transpose(2, 3)):  # dtype, strides, no batch axis
        assert torch.equal(ops.max_pool2x2(other), F.max_pool2d(other, 2))
    with pytest.raises(RuntimeError):  # too small to pool: the same error as F.max_pool2d
        ops.max_pool2x2(torch.randn(1, 1, 1, 4))


def test_without_a_compiler_max_pool2d_does_the_work(monkeypatch, tmp_path):
    """A machine without a working C compiler, or an unwritable cache: the same numbers through F.max_pool2d."""
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("DIGITPAIRS_CACHE", str(tmp_path / "cache"))
    ops.library.cache_clear()
    try:
        assert ops.library() is None
        x = torch.randn(2, 16, 8, 8, requires_grad=True)
        ops.max_pool2x2(x).sum().backward()
        assert x.grad.sum() == 2 * 16 * 4 * 4
    finally:
        ops.library.cache_clear()


def test_a_corrupt_cached_library_is_rebuilt(monkeypatch, tmp_path):
    ops.library.cache_clear()
    try:
        name = Path(ops.library()._name).name  # the name this machine's kernels have in any cache folder
        damaged = tmp_path / "ops" / name
        damaged.parent.mkdir()
        damaged.write_bytes(b"not a shared library")
        monkeypatch.setenv("DIGITPAIRS_CACHE", str(tmp_path))
        ops.library.cache_clear()
        assert ops.library() is not None and damaged.read_bytes() != b"not a shared library"
    finally:
        ops.library.cache_clear()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_tensors_pool_with_max_pool2d():
    x = torch.randn(2, 16, 9, 8, device="cuda", requires_grad=True)
    y = ops.max_pool2x2(x)
    y.sum().backward()
    assert y.device == x.device and torch.equal(y, F.max_pool2d(x, 2)) and x.grad.sum().item() == 2 * 16 * 4 * 4


def conv_pooled_both_ways(x, w, b, pad, k, g, precision):
    """(values, weight gradient, bias gradient) of max-pooled F.conv2d and of ops.conv_pool2x2; bf16: under autocast
    (the reference's gradients then in fp32 from bf16-rounded operands, which the fused kernel sums exactly too)."""
    out = []
    for fused in (False, True):
        wi, bi = w.clone().requires_grad_(), None if b is None else b.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            if fused:
                y = ops.conv_pool2x2(x, wi, bi, pad, k)
            else:
                y = F.max_pool2d(F.conv2d(x, wi, bi, padding=pad, groups=k), 2)
        if precision == "bf16" and not fused:  # gradients from the same bf16 values, summed in fp32
            rnd = (lambda t: None if t is None else t.detach().bfloat16().float().requires_grad_())
            wi, bi = rnd(w), rnd(b)
            y32 = F.max_pool2d(F.conv2d(x.bfloat16().float(), wi, bi, padding=pad, groups=k), 2)
            y32.backward(g.float())
        else:
            y.backward(g.to(y.dtype))
        out.append((y.detach(), wi.grad, None if bi is None else bi.grad))
    return out


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("size, ks, pad, bias", [(28, 5, 0, True), (14, 3, 0, False), (14, 3, 1, True),
                                                 (11, 4, 0, True), (9, 7, 2, False)])
def test_fused_convolution_and_pool_equal_conv2d_then_max_pool2d(precision, size, ks, pad, bias):
    """Small integers make every sum exact in either order: the same values, the same argmax (ties included: many
    windows hold equal maxima) and the same gradients as F.conv2d then F.max_pool2d."""
    k, c, n = 3, 16, 6
    gen = torch.Generator().manual_seed(size + ks)
    ints = lambda *shape: torch.randint(-2, 3, shape, generator=gen).float()
    x, w, b = ints(n, k, size, size), ints(k * c, 1, ks, ks), ints(k * c) if bias else None
    side = (size + 2 * pad - ks + 1) // 2
    g = ints(n, k * c, side, side)
    (y_ref, gw_ref, gb_ref), (y, gw, gb) = conv_pooled_both_ways(x, w, b, pad, k, g, precision)
    assert y.dtype == y_ref.dtype and torch.equal(y, y_ref)
    assert torch.equal(gw, gw_ref) and (gb is None or torch.equal(gb, gb_ref))


def test_fused_convolution_on_real_valued_inputs():
    k, c = 2, 32
    gen = torch.Generator().manual_seed(5)
    x, w, b = torch.randn(8, k, 14, 14, generator=gen), torch.randn(k * c, 1, 3, 3, generator=gen), torch.randn(k * c)
    g = torch.randn(8, k * c, 6, 6, generator=gen)
    (y_ref, gw_ref, gb_ref), (y, gw, gb) = conv_pooled_both_ways(x, w, b, 0, k, g, "fp32")
    torch.testing.assert_close(y, y_ref)
    torch.testing.assert_close(gw, gw_ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(gb, gb_ref, rtol=1e-4, atol=1e-4)
    with torch.inference_mode():
        torch.testing.assert_close(ops.conv_pool2x2(x, w, b, 0, k), y_ref)


def test_other_convolutions_take_the_unfused_path():
    """Several input channels, a channel count not a multiple of 16, an image that needs a gradient: conv2d."""
    x = torch.randn(2, 4, 10, 10)
    for w, groups, xi in ((torch.randn(32, 2, 3, 3), 2, x), (torch.randn(40, 1, 3, 3), 4, x),
                          (torch.randn(32, 1, 3, 3), 2, x[:, :2].clone().requires_grad_())):
        assert ops._conv_mode(xi, w, groups, 0) is None
        y = ops.conv_pool2x2(xi, w, None, 0, groups)
        torch.testing.assert_close(y, F.max_pool2d(F.conv2d(xi, w, groups=groups), 2))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("momentum", [0.1, None])
def test_batch_norm_relu_is_relu_of_batch_norm(dtype, momentum):
    """Training (batch statistics, running statistics updated), backward, then eval (running statistics)."""
    gen = torch.Generator().manual_seed(6)
    x = (torch.randn(20, 48, 6, 5, generator=gen) * 3 + 1).to(dtype).contiguous(memory_format=torch.channels_last)
    g = torch.randn(x.shape, generator=gen).to(dtype)
    bns = [torch.nn.BatchNorm2d(48, momentum=momentum) for _ in range(2)]
    for bn in bns:
        torch.nn.init.uniform_(bn.weight, 0.5, 1.5), torch.nn.init.uniform_(bn.bias, -0.5, 0.5)
    bns[1].load_state_dict(bns[0].state_dict())
    outs = []
    for bn, fn in zip(bns, (lambda t, bn: torch.relu(bn(t)), bnrelu.batch_norm_relu)):
        xi = x.clone().requires_grad_()
        for _ in range(2):  # the running statistics move twice
            y = fn(xi, bn)
        y.backward(g)
        bn.eval()
        with torch.inference_mode():
            outs.append((y.detach(), xi.grad, bn.weight.grad, bn.bias.grad, fn(x, bn)))
    tol = {"rtol": 2e-2, "atol": 2e-2} if dtype == torch.bfloat16 else {"rtol": 1e-4, "atol": 1e-4}
    for ref, new in zip(*outs):
        assert new.dtype == ref.dtype
        torch.testing.assert_close(new.float(), ref.float(), **tol)
    for key in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(bns[1], key), getattr(bns[0], key), rtol=1e-4, atol=1e-5)


def test_batch_norm_relu_falls_back_to_pytorch():
    x = torch.randn(4, 20, 3, 3)  # NCHW, 20 channels: PyTorch's
    bn = torch.nn.BatchNorm2d(20)
    assert not bnrelu._fusable(x, bn)
    torch.testing.assert_close(bnrelu.batch_norm_relu(x, bn), torch.relu(torch.nn.BatchNorm2d(20)(x)))
    assert torch.equal(bnrelu.batch_norm_relu(x, torch.nn.Identity()), torch.relu(x))


# ---- a damaged kernel cache: rebuilt, or PyTorch's ops; never a crash or a traceback ----

@pytest.fixture
def cached(monkeypatch, tmp_path):
    """A cache folder (the one in use) holding this machine's kernels and their digest as a build leaves them:
    (the library's path there, its bytes). Copied from the usual cache: a file this process has loaded is never
    damaged in place (a truncated mapping is a SIGBUS)."""
    ops.library.cache_clear()
    lib = ops.library()
    if lib is None:
        pytest.skip("needs a C compiler")
    path = tmp_path / "ops" / Path(lib._name).name
    path.parent.mkdir()
    for suffix in ("", ".sha256"):
        shutil.copyfile(lib._name + suffix, f"{path}{suffix}")
    monkeypatch.setenv("DIGITPAIRS_CACHE", str(tmp_path))
    ops.library.cache_clear()
    yield path, path.read_bytes()
    ops.library.cache_clear()


def kernels_in_a_new_process() -> list[str]:
    """Whether a new process (this environment) gets the kernels, and whether they pool right. A new process: one
    that loads a truncated library dies of SIGBUS, which would end the test session."""
    code = ("import torch, torch.nn.functional as F; from digitpairs.kernels import pool as ops; x = torch.randn(2, 16, 8, 8); "
            "print(ops.library() is not None, torch.equal(ops.max_pool2x2(x), F.max_pool2d(x, 2)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=300)
    assert done.returncode == 0, (done.returncode, done.stderr)
    without = done.stdout.split()[0] == "False"  # then one warning line says why, and nothing else is said
    assert (len(done.stderr.splitlines()) == 1 and "PyTorch's operators run instead" in done.stderr) if without \
        else not done.stderr, done.stderr
    return done.stdout.split()


def digest_matches(path: Path) -> bool:
    return Path(f"{path}.sha256").read_bytes() == build._digest(path).encode()


def foreign_library() -> str:
    """A real shared library that is not ours: the C math library this process has loaded."""
    maps = Path("/proc/self/maps").read_text().split() if Path("/proc/self/maps").exists() else []
    libm = next((word for word in maps if "/libm.so" in word or "/libm-" in word), None)
    if libm is None:
        pytest.skip("needs the path of the C math library")
    return libm


@pytest.mark.parametrize("size", [20000, 5000])
def test_a_truncated_cached_library_is_rebuilt_not_loaded(cached, size):
    path, good = cached
    path.write_bytes(good[:size])  # its digest, recorded by the build, no longer matches
    assert kernels_in_a_new_process() == ["True", "True"]
    assert path.stat().st_size > size and digest_matches(path)


@pytest.mark.parametrize("digest", ["ours", "none"])
def test_a_foreign_library_in_the_cache_is_rebuilt(cached, digest):
    """libm under our name, beside our digest (a mismatch) or none (a cache from before digests): never loaded."""
    path, _ = cached
    shutil.copyfile(foreign_library(), path)
    if digest == "none":
        Path(f"{path}.sha256").unlink()
    lib = ops.library()
    assert lib is not None and Path(lib._name) == path and digest_matches(path)
    assert path.read_bytes() != Path(foreign_library()).read_bytes()
    (y_ref, g_ref), (y, g) = pooled_both_ways(torch.randn(2, 16, 8, 8))
    assert torch.equal(y, y_ref) and torch.equal(g, g_ref)


def test_a_foreign_library_with_a_matching_digest_gives_pytorchs_ops_then_is_rebuilt(cached):
    """The digest can't tell (it matches libm): loaded, a kernel missing, rebuilt. This process gets PyTorch's ops
    (dlopen gives back the library it loaded under that name); the next gets the kernels."""
    path, _ = cached
    shutil.copyfile(foreign_library(), path)
    Path(f"{path}.sha256").write_text(build._digest(path))
    assert ops.library() is None
    assert digest_matches(path) and path.read_bytes() != Path(foreign_library()).read_bytes()
    assert kernels_in_a_new_process() == ["True", "True"]


def test_a_damaged_cache_without_a_compiler_gives_pytorchs_ops(cached, monkeypatch, tmp_path):
    """A compiler gone after the cache was damaged: no kernels, no error. The cache's names depend on the compiler:
    those this one gets are recorded, then damaged (truncated, beside the digest the build recorded)."""
    path, good = cached
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    names, load = [], build._load
    monkeypatch.setattr(build, "_load", lambda p: names.append(p) or load(p))
    assert ops.library() is None and len(names) == 2
    for name in names:
        name.write_bytes(good[:20000])
        shutil.copyfile(f"{path}.sha256", f"{name}.sha256")
    assert kernels_in_a_new_process() == ["False", "True"]
    assert all(name.stat().st_size == 20000 for name in names)


@pytest.mark.slow
def test_cc_with_arguments_builds_the_kernels(tmp_path):
    """CC as users set it, a command with arguments (CC="ccache gcc", CC="gcc -w"): split as a shell would."""
    code = "from digitpairs.kernels import build; print(build.compiler(), build.library() is not None)"
    env = dict(os.environ, CC="cc -w", DIGITPAIRS_CACHE=str(tmp_path))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False, timeout=300)
    assert done.stdout.split() == ["['cc',", "'-w']", "True"], done.stderr
