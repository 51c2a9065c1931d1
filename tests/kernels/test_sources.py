"""The C kernels' sources (kernels/csrc): shipped as package data, joined into what gets compiled, and agreeing with
the Python side on every constant and every function it calls."""

import ctypes
import re
import subprocess
from importlib import resources
from pathlib import Path

import pytest

from digitpairs.kernels import batchnorm, build

CSRC = Path(build.__file__).parent / "csrc"


def _defines(text: str) -> dict[str, list[int]]:
    """Every `#define NAME <integer>` of text, with all its values (more than one is a second definition)."""
    found: dict[str, list[int]] = {}
    for name, value in re.findall(r"^#define (\w+)\s+(\d+)\b", text, re.MULTILINE):
        found.setdefault(name, []).append(int(value))
    return found


def _exported(text: str) -> set[str]:
    """The non-static functions the C text defines: plain ones, and those of its macros (`void f_##NAME(` in a
    `#define M(T, NAME, ...)` body) under each top-level instantiation `M(type, name, ...)`."""
    names = set(re.findall(r"^void (\w+)\(", text, re.MULTILINE))
    for macro, body in re.findall(r"^#define (\w+)\(T, NAME[^)]*\)((?:.*\\\n)*.*)", text, re.MULTILINE):
        bases = re.findall(r"^void (\w+)_##NAME\(", body, re.MULTILINE)
        for suffix in re.findall(rf"^{macro}\(\w+, (\w+)", text, re.MULTILINE):
            names |= {f"{base}_{suffix}" for base in bases}
    return names


def _declared() -> set[str]:
    """The functions build._declare gives types to, recorded without a compiled library."""

    class Recorder:
        def __init__(self):
            self.names, self.functions = set(), {}

        def __getattr__(self, name):
            self.names.add(name)
            return self.functions.setdefault(name, type("Function", (), {})())

    lib = Recorder()
    assert build._declare(lib) is lib
    return lib.names


def test_package_data_and_the_joined_source():
    csrc = resources.files("digitpairs.kernels") / "csrc"
    assert sorted(p.name for p in CSRC.iterdir() if p.suffix in (".c", ".h")) == sorted(build.PARTS)
    for name in build.PARTS:
        assert (csrc / name).is_file() and (csrc / name).read_text() == (CSRC / name).read_text()
    assert build.source() == "".join((CSRC / name).read_text() for name in build.PARTS)
    assert build.PARTS[0] == "common.h"  # the others use its types and helpers: it comes first
    assert not (CSRC.parent / "source.py").exists()  # one copy of the C text


def test_constants_match_the_c_source():
    files = {name: _defines((CSRC / name).read_text()) for name in build.PARTS}
    assert files["common.h"]["LANES"] == [16] and build.LANES == 16
    assert files["batchnorm.c"]["MAX_C"] == [batchnorm.MAX_C]
    assert files["conv_pool.c"]["MAX_TAPS"] == [build.MAX_KERNEL**2]
    assert batchnorm.MAX_C % build.LANES == 0  # the kernels' channel blocks
    counts: dict[str, int] = {}
    for found in files.values():
        for name, values in found.items():
            counts[name] = counts.get(name, 0) + len(values)
    assert {name for name, n in counts.items() if n > 1} == set()  # each constant defined once in the joined text
    for name in ("LANES", "MAX_C", "MAX_TAPS"):
        assert build.define(name) == _defines(build.source())[name][0]
    with pytest.raises(LookupError):
        build.define("NO_SUCH_CONSTANT")


def test_every_declared_function_is_in_the_c_source():
    declared = _declared()
    assert len(declared) == 20
    assert declared == _exported(build.source())  # each one defined, and none the Python side forgets


def test_the_joined_text_is_what_gets_compiled(monkeypatch, tmp_path):
    compiled = []

    def compiler(args, **kwargs):
        compiled.append(Path(args[args.index("-o") - 1]).read_text())
        return subprocess.CompletedProcess(args, 1)

    monkeypatch.setattr(build.subprocess, "run", compiler)
    assert build._build(["cc"], list(build.FLAGS), tmp_path / "ops.so") == "cc failed: exit code 1"  # a stand-in
    assert compiled == [build.source()]


def test_the_built_library_exports_every_declared_function():
    lib = build.library()
    if lib is None:
        pytest.skip("no working C compiler")
    for name in _declared():
        assert isinstance(getattr(lib, name), ctypes._CFuncPtr)
