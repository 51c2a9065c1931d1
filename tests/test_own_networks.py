"""Networks of a user's own, end to end as a new user would use them: a plugin file named by a study file, an
installed package (the example in examples/), through run, report, predict, export mlflow and bench; and a kill -9
mid-unit, then the same command: the same table as an uninterrupted run."""

import importlib.metadata
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from digitpairs.base.procfs import descendants
from tests.runner.test_faults import stored_runs, table
from tests.support import gone, run_cli, start

NETS = '''
import torch
from torch import nn

import digitpairs as dp


class TinyResidual(nn.Module):
    def __init__(self, size):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8))
        self.out = nn.Sequential(nn.MaxPool2d(2), nn.Flatten(), nn.Dropout(0.2), nn.Linear(8 * (size // 2) ** 2, 10))

    def forward(self, x):
        h = self.stem(x)
        return self.out(torch.relu(h + self.block(h)))


def my_head():
    return nn.Sequential(nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, 1))


dp.register(dp.Arch("tiny_res", "Tiny residual", objective="comparison+digits", branch=TinyResidual))
dp.register(dp.Arch("tiny_res_head", "Tiny residual, my head", share=False, objective="comparison+digits",
                    branch=TinyResidual, head=my_head))
'''

STUDY = '''
name = "mine"
rounds = 4
plugins = ["nets.py"]
archs = ["tiny_res", "tiny_res_head"]
[config]
size = 14
n_pairs = 200
n_test = 200
epochs = 2
'''


@pytest.fixture
def study(tmp_path):
    (tmp_path / "nets.py").write_text(NETS)
    (tmp_path / "mine.toml").write_text(STUDY)
    return tmp_path / "mine.toml"


def run(study, tmp_path, name, *more, workers=2):
    return [sys.executable, "-m", "digitpairs", "run", str(study), "--store", str(tmp_path / f"{name}.sqlite"),
            "--batch-rounds", "2", "--workers", str(workers), *map(str, more)]


@pytest.mark.slow
def test_a_study_file_with_its_plugin_runs_reports_predicts_and_exports(study, tmp_path, real_data_dir):
    p = subprocess.run(run(study, tmp_path, "s", "--rounds", "2", "--data-dir", real_data_dir), capture_output=True,
                       text=True, timeout=600, check=False)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "tiny_res: one round at a time, the rounds spread over threads and workers (on the CPU its " in p.stdout
    report = (tmp_path / "mine" / "report.md").read_text()
    assert "Tiny residual" in report and "Tiny residual, my head" in report
    store = tmp_path / "s.sqlite"
    image = tmp_path / "digit.png"
    from PIL import Image

    from digitpairs.data import mnist
    Image.fromarray(mnist.load(real_data_dir)["test_images"][0]).save(image)
    # no --plugin: the study's stored plugins are loaded again
    pred = run_cli("predict", image, image, "--store", store, "--arch", "tiny_res_head")
    assert pred.returncode == 0, pred.stderr and "answer: first <= second" in pred.stdout
    pytest.importorskip("mlflow")
    exp = run_cli("export", "mlflow", "--store", store, "--tracking-uri", f"sqlite:///{tmp_path / 'ml.db'}")
    assert exp.returncode == 0, exp.stderr[-2000:]


@pytest.mark.slow
def test_kill_9_mid_unit_then_the_same_command_gives_the_uninterrupted_table(study, tmp_path, real_data_dir):
    one = subprocess.run(run(study, tmp_path, "one", "--data-dir", real_data_dir, workers=1), capture_output=True,
                         text=True, timeout=600, check=False)
    assert one.returncode == 0, one.stderr[-2000:]
    cmd = run(study, tmp_path, "killed", "--data-dir", real_data_dir)
    store = tmp_path / "killed.sqlite"
    proc = start(cmd)
    deadline = time.monotonic() + 240
    while stored_runs(store) < 1 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.1)  # mid-unit: the other worker's unit, and this one's next, are training
    assert proc.poll() is None, "the study ended before its kill"
    workers = descendants(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    time.sleep(0.5)
    assert gone(workers) and stored_runs(store) < 8
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    assert again.returncode == 0, again.stderr[-2000:]
    resumed, uninterrupted = table(store), table(tmp_path / "one.sqlite")
    assert resumed["counts"] == (8, 8)
    assert resumed["runs"] == uninterrupted["runs"] and resumed["curves"] == uninterrupted["curves"]


def test_a_plugin_that_fails_or_registers_a_name_twice_is_one_line(tmp_path):
    (tmp_path / "nets.py").write_text(NETS)
    (tmp_path / "again.py").write_text(NETS)
    twice = run_cli("list", "--plugin", tmp_path / "nets.py", "--plugin", tmp_path / "again.py")
    assert twice.returncode == 2 and "'tiny_res' is already registered" in twice.stderr
    (tmp_path / "broken.py").write_text("raise RuntimeError('half written')\n")
    broken = run_cli("list", "--plugin", tmp_path / "broken.py")
    assert broken.returncode == 2 and "RuntimeError: half written" in broken.stderr
    (tmp_path / "wrong.py").write_text(NETS.replace("nn.Linear(8 * (size // 2) ** 2, 10)",
                                                    "nn.Linear(8 * (size // 2) ** 2, 9)"))
    wrong = run_cli("list", "--plugin", tmp_path / "wrong.py")
    assert wrong.returncode == 2 and "architecture tiny_res: its branch maps (3, 1, 28, 28) to (3, 9)" in wrong.stderr
    for p in (twice, broken, wrong):
        assert len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr


def test_a_study_files_plugins_are_relative_to_it(study, tmp_path):
    p = run_cli("run", study, "--quick", "--members", "0", "--store", tmp_path / "s.sqlite", cwd="/")
    assert p.returncode == 2 and "members must be in [1, 16]" in p.stderr  # the plugin loaded: only the flag is wrong
    (tmp_path / "mine.toml").write_text(STUDY.replace('"nets.py"', '"elsewhere/nets.py"'))
    missing = run_cli("run", study, "--quick", "--store", tmp_path / "s.sqlite")
    assert missing.returncode == 2 and f"no plugin file {tmp_path / 'elsewhere' / 'nets.py'}" in missing.stderr
    assert not (tmp_path / "s.sqlite").exists()


INSTALLED = {ep.name for ep in importlib.metadata.entry_points(group="digitpairs.archs")}


@pytest.mark.skipif("examples" not in INSTALLED, reason="the example package is not installed (scripts/test.sh does)")
def test_an_installed_package_s_architectures_are_listed_and_its_study_runs(tmp_path, real_data_dir):
    listed = run_cli("list")
    assert listed.returncode == 0
    assert "residual_ws_aux" in listed.stdout and "digitpairs_examples.archs" in listed.stdout
    import digitpairs_examples

    study = os.path.join(os.path.dirname(digitpairs_examples.__file__), "examples.toml")
    p = run_cli("run", study, "--quick", "--rounds", "1", "--epochs", "1", "--size", "14", "--store",
                tmp_path / "s.sqlite", "--data-dir", real_data_dir)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "residual_ws_aux: one round at a time" in p.stdout and "mlp_ws_aux: batched" in p.stdout


def test_bench_takes_a_network_of_ones_own(tmp_path, real_data_dir):
    (tmp_path / "nets.py").write_text(NETS)
    p = run_cli("bench", "--arch", "tiny_res", "--plugin", tmp_path / "nets.py", "--size", "14", "--epochs", "1",
                "--rounds", "2", "--data-dir", real_data_dir, "--device", "cpu")
    assert p.returncode == 0, p.stderr[-2000:]
    assert "your network: looped in the engine" in p.stdout and "speedup" in p.stdout
    machine = re.search(r"^machine: .*, (\d+) threads;", p.stdout, re.MULTILINE)
    assert machine, p.stdout
    threads = int(machine.group(1))
    assert ("on 2 worker processes of one thread each" in p.stdout) == (threads > 1)


@pytest.mark.slow
def test_a_plugin_file_s_networks_train_as_ray_tasks(study, tmp_path, real_data_dir):
    """A Ray worker has no such module: the plugin file's code travels with the tasks."""
    pytest.importorskip("ray", reason="Ray is not installed here (the extra digitpairs[ray])")
    p = run_cli("run", study, "--quick", "--rounds", "2", "--epochs", "1", "--backend", "ray", "--store",
                tmp_path / "s.sqlite", "--data-dir", real_data_dir, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    assert table(tmp_path / "s.sqlite")["counts"] == (4, 4)
