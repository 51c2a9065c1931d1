"""Helpers the tests share, imported as `tests.support` (the fixtures are in conftest.py): MNIST-shaped data, IDX
files, the command in a subprocess, study files, and a store filled with runs."""

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from digitpairs import UserError
from digitpairs.base.procfs import descendants
from digitpairs.spec import studyfile
from digitpairs.spec.records import RunResult


def write_idx(path: Path, array: np.ndarray) -> Path:
    """Write a uint8 array as an IDX file (magic 0x0801 for 1-d labels, 0x0803 for 3-d images)."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())
    return path


def fake_mnist(n_train=400, n_test=200, seed=0) -> dict:
    """MNIST-shaped random data with digit-dependent brightness, so that digits can be learned a little."""
    rng = np.random.default_rng(seed)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = rng.integers(0, 40, (n, 28, 28)).astype(np.uint8)
        for d in range(10):  # digit d lights up a band of rows
            images[labels == d, 2 * d + 4: 2 * d + 8, 6:22] = 250
        out[f"{split}_images"], out[f"{split}_labels"] = images, labels
    return out


def assert_together_as_alone(arch, cfg, datas: list, seeds: list[int], device: str, loss_tol: float,
                              acc_tol: float) -> None:
    """The rounds trained as one group against each trained alone: at every epoch, the training loss within
    loss_tol and the test accuracy within acc_tol."""
    from digitpairs.engine.training import train
    rounds = list(range(len(datas)))
    together = train(arch, cfg, datas, rounds, seeds, groups=[len(datas)], device=device)
    for i, s in enumerate(seeds):
        (alone,) = train(arch, cfg, [datas[i]], [i], [s], device=device)
        for ca, ct in zip(alone.curves, together[i].curves, strict=True):
            assert abs(ca["train_loss"] - ct["train_loss"]) < loss_tol
            assert abs(ca["test_acc"] - ct["test_acc"]) <= acc_tol


def run_cli(*args, env=None, timeout=600, cwd=None):
    """Run `python -m digitpairs ARGS` in a subprocess (in the folder cwd); return the CompletedProcess (text)."""
    return subprocess.run([sys.executable, "-m", "digitpairs", *map(str, args)], capture_output=True, text=True, check=False,
                          env=env, timeout=timeout, cwd=cwd)


def write_study(tmp_path: Path, text: str) -> Path:
    """A study file study.toml with this text."""
    path = tmp_path / "study.toml"
    path.write_text(text)
    return path


def assert_study_refused(tmp_path: Path, text: str, expected: str) -> None:
    """Loading a study file with this text is one line that names the file and says `expected`."""
    path = write_study(tmp_path, text)
    with pytest.raises(UserError, match=re.escape(expected)) as e:
        studyfile.load(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


SPEC = {"rounds": 3, "select": None, "variants": [
    {"name": n, "base": n, "sweep": {}, "config": {}, "arch": {"label": n.upper(), "head": "mlp", "report": None}}
    for n in ("a", "b")]}


def fill(store, accs: dict[str, list[float]]):
    store.ensure_study("st", SPEC)
    for name, values in accs.items():
        store.add_runs("st", name, {}, [
            RunResult(r, r, acc, None, 10, 1.0, 1,
                      [{"epoch": 1, "train_cmp": 0.5, "train_loss": 0.5, "val_acc": None, "test_acc": acc}])
            for r, acc in enumerate(values) if acc is not None])


# --- a study in a process of its own, as a terminal starts it, and its interruption (runner/test_faults.py, ...) ---
LOGGED = re.compile(r"^(\S+)\s+round\s+(\d+)\s+test acc")


def start(cmd) -> subprocess.Popen:
    """A study in its own process group, as a terminal starts a command (Ctrl-C's SIGINT at its default, even where
    the tests run as a background job, which ignores it); stdout unbuffered, read line by line."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:  # an ignored signal stays ignored across exec, a handled
        signal.signal(signal.SIGINT, signal.default_int_handler)  # one starts at its default
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)


def gone(pids) -> bool:
    """Whether none of these processes runs (a zombie waiting for its reaper has ended)."""
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] != "Z":
                    return False
        except (FileNotFoundError, ProcessLookupError):
            pass
    return True


def interrupt(proc, sig, code, pause: float = 0.0, least: int = 0, settle: float = 0.5) -> set[tuple[str, int]]:
    """Once the command has logged a finished run (and `pause` s more), send it `sig` as a terminal sends Ctrl-C: to
    its whole process group. It must end within 5 s with `code` and a last line saying how to resume, no traceback,
    and none of the (at least `least`) processes below it left. Returns the runs it logged as finished."""
    lines, errors = [], []
    readers = [threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True),
               threading.Thread(target=lambda: errors.extend(proc.stderr), daemon=True)]
    for r in readers:
        r.start()
    deadline = time.monotonic() + 240
    while not any(LOGGED.match(x) for x in list(lines)) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(pause)
    assert proc.poll() is None, "the study ended before the interrupt: " + "".join(errors)[-2000:]
    ours = descendants(proc.pid)
    assert len(ours) >= least
    sent = time.monotonic()
    os.killpg(proc.pid, sig)
    proc.wait(timeout=60)
    took = time.monotonic() - sent
    for r in readers:
        r.join(timeout=5)
    err = "".join(errors)
    assert proc.returncode == code, err[-2000:]
    assert took < 5, f"the command took {took:.1f} s to end"
    assert "Traceback" not in err and "run the same command to resume" in err.strip().splitlines()[-1]
    time.sleep(settle)
    assert gone(ours), f"processes left: {ours}"
    return {(m[1], int(m[2])) for m in map(LOGGED.match, lines) if m}
