"""Checkpoints: an intact one resumes exactly; a damaged one (bytes flipped or cut, or contents that do not fit the
group) is ignored with one line on stderr and leaves the group exactly as it was, so training starts afresh."""

import copy
import os

import pytest
import torch

from digitpairs.data.pairs import round_data
from digitpairs.engine.checkpoint import Checkpoints, _read, _state, _write
from digitpairs.engine.training import build, train
from digitpairs.model.weights import from_bytes
from digitpairs.spec.config import Config
from digitpairs.spec.registry import arch_config, get_arch
from tests.support import fake_mnist

ARCH, SEEDS, ROUNDS = "siamese_ws_aux_bn_drop", [3, 4], [0, 1]  # dropout, augmentation, OneCycle: every state used
CFG = Config(size=14, n_pairs=60, n_test=60, epochs=2, batch_size=20, precision="fp32", device="cpu",
             schedule="onecycle", shift=0.1)


def datas():
    m = fake_mnist()
    return [round_data(m, s, CFG.n_pairs, CFG.n_test, CFG.size) for s in SEEDS]


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    """A group trained for its 2 epochs with checkpoints: its results and the checkpoint of its last epoch."""
    ckpt = Checkpoints(tmp_path_factory.mktemp("whole") / "unit")
    results = train(ARCH, CFG, datas(), ROUNDS, SEEDS, groups=[2], checkpoints=ckpt)
    return results, ckpt.path(ROUNDS).read_bytes()


@pytest.fixture
def ckpt(tmp_path, whole):
    """A copy of the checkpoint, in this test's own folder."""
    ckpt = Checkpoints(tmp_path / "unit")
    ckpt.folder.mkdir()
    ckpt.path(ROUNDS).write_bytes(whole[1])
    return ckpt


def group():
    """The group as train_group builds it, before it loads its checkpoint."""
    arch = get_arch(ARCH)
    return build(arch, arch_config(arch, CFG), SEEDS, torch.device("cpu"), True, CFG.epochs * 6)


def same(a, b) -> bool:
    """Equal to the last bit, tensors (and their types) included."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return type(a) is type(b) and len(a) == len(b) and all(map(same, a, b))
    return a == b


def test_an_intact_checkpoint_resumes_exactly(ckpt, whole, capsys):
    state = _read(ckpt.path(ROUNDS), "cpu")
    net, opt, sched = group()
    assert ckpt.load(ROUNDS, state["key"], net, opt, sched) == (2, [r.curves for r in whole[0]])
    assert same(_state(net, opt, sched), {k: state[k] for k in ("net", "opt", "sched", "rngs")})
    assert capsys.readouterr().err == "unit rounds [0, 1]: resuming from the checkpoint of epoch 2\n"


def test_an_older_format_or_another_groups_checkpoint_is_ignored_silently(ckpt, capsys):
    state = _read(ckpt.path(ROUNDS), "cpu")
    net, opt, sched = group()
    before = copy.deepcopy(_state(net, opt, sched))
    assert ckpt.load(ROUNDS, {**state["key"], "seeds": [5, 6]}, net, opt, sched) == (0, [[], []])
    torch.save(state, ckpt.path(ROUNDS))  # the format before the digest: torch.save of the state alone
    assert ckpt.load(ROUNDS, state["key"], net, opt, sched) == (0, [[], []])
    assert same(_state(net, opt, sched), before) and capsys.readouterr().err == ""


def flip(data: bytes, at: float, n: int = 64) -> bytes:
    i = int(len(data) * at)
    return data[:i] + bytes(b ^ 0xFF for b in data[i:i + n]) + data[i + n:]


BYTES = {  # damage to the file's bytes: the digest no longer matches, or there is not enough to read
    "64 bytes flipped in a tensor": lambda data: flip(data, 0.5),
    "the last byte flipped": lambda data: data[:-1] + bytes([data[-1] ^ 1]),
    "a byte of the digest flipped": lambda data: data[:31] + bytes([data[31] ^ 1]) + data[32:],
    "truncated to half": lambda data: data[: len(data) // 2],
    "truncated into the digest": lambda data: data[:40],
}


def rngs_zero(state):  # of the right type and size, but no valid generator state: fails at the last restore step
    state["rngs"] = [torch.zeros_like(s) for s in state["rngs"]]


def first_adam_state_reshaped(state):
    s = state["opt"]["state"][0]
    s["exp_avg"] = s["exp_avg"].flatten()[:-1]


CONTENTS = {  # damage to the contents, under a matching digest: they do not fit the group
    "rngs too short": lambda state: state.update(rngs=state["rngs"][:1]),
    "an rng state not a ByteTensor": lambda state: state["rngs"].__setitem__(0, state["rngs"][0].float()),
    "rngs invalid": rngs_zero,
    "opt emptied": lambda state: state.update(opt={"state": {}, "param_groups": []}),
    "opt an empty dict": lambda state: state.update(opt={}),
    "an Adam state of another shape": first_adam_state_reshaped,
    "opt's learning rate a string": lambda state: state["opt"]["param_groups"][0].update(lr="x"),
    "curves empty": lambda state: state.update(curves=[]),
    "curves shorter than the epochs": lambda state: state.update(curves=[c[:1] for c in state["curves"]]),
    "epoch a string": lambda state: state.update(epoch="x"),
    "epoch 0": lambda state: state.update(epoch=0),
    "no schedule": lambda state: state.update(sched=None),
    "a parameter missing": lambda state: state["net"].pop(next(iter(state["net"]))),
    "parameters of another type": lambda state: state["net"].update({k: v.double() for k, v in state["net"].items()}),
    "no epoch": lambda state: state.pop("epoch"),
}


def damage(ckpt: Checkpoints, how: str) -> dict:
    """Damage the group's checkpoint as `how` says; return its key."""
    path = ckpt.path(ROUNDS)
    state = _read(path, "cpu")
    if how in BYTES:
        path.write_bytes(BYTES[how](path.read_bytes()))
    else:
        CONTENTS[how](state)
        _write(path, state)
    return state["key"]


@pytest.mark.parametrize("how", [*BYTES, *CONTENTS])
def test_a_damaged_checkpoint_is_ignored_and_changes_nothing(ckpt, how, capsys):
    key = damage(ckpt, how)
    net, opt, sched = group()
    before = copy.deepcopy(_state(net, opt, sched))
    assert ckpt.load(ROUNDS, key, net, opt, sched) == (0, [[], []])
    assert same(_state(net, opt, sched), before)
    err = capsys.readouterr().err
    assert err.startswith("unit rounds [0, 1]: the checkpoint group-0.pt is damaged (") and err.count("\n") == 1
    assert err.endswith(") and ignored: training from the start\n")


@pytest.mark.parametrize("how", ["rngs invalid", "64 bytes flipped in a tensor"])
def test_training_over_a_damaged_checkpoint_equals_training_without_one(ckpt, whole, how, capsys):
    """The group trains its 2 epochs from the start, to the same numbers as a run that never had a checkpoint
    (restored then put back, where the damage shows only at the last restore step)."""
    damage(ckpt, how)
    ticks = []
    again = train(ARCH, CFG, datas(), ROUNDS, SEEDS, groups=[2], checkpoints=ckpt, on_epoch=ticks.append)
    assert ticks == [2, 2] and "damaged" in capsys.readouterr().err
    for a, b in zip(whole[0], again):
        assert a.curves == b.curves and same(from_bytes(a.weights), from_bytes(b.weights))
    assert ckpt.path(ROUNDS).read_bytes() == whole[1]  # and its checkpoint is whole again


@pytest.mark.parametrize("when", ["before the file is opened", "between the folder's parent and the folder"])
def test_a_save_survives_another_group_removing_an_empty_folder(tmp_path, monkeypatch, when):
    """Groups (of one variant, or of the study's other variants) share folders: a group's remove() may delete one,
    empty for a moment, while another group's save has made it and not yet put its file there. The save makes it
    again; the same for the check before training (study.check_checkpoints), which uses the same function."""
    import os

    from digitpairs.engine import checkpoint

    study = tmp_path / "checkpoints" / "study"
    ckpt, calls = Checkpoints(study / "variant"), []
    net, opt, sched = group()
    if when == "before the file is opened":
        def racing(file, mode):
            if not calls:
                ckpt.folder.rmdir()  # the other group's remove(), at the worst moment
            calls.append(file)
            return open(file, mode)

        monkeypatch.setattr(checkpoint, "open", racing, raising=False)
    else:
        mkdir = os.mkdir

        def racing(path, *args):
            if str(path) == str(ckpt.folder) and study.is_dir() and not calls:
                study.rmdir()  # another variant's remove() takes the study's folder, just made
                calls.append(path)
            return mkdir(path, *args)

        monkeypatch.setattr(os, "mkdir", racing)
    ckpt.save(ROUNDS, {"k": 1}, 1, net, opt, sched, [[], []])
    assert calls and [p.name for p in ckpt.folder.iterdir()] == [ckpt.path(ROUNDS).name]
    assert _read(ckpt.path(ROUNDS), "cpu")["epoch"] == 1


def test_a_checkpoint_of_another_devices_adam_resumes_with_this_ones(ckpt, whole, capsys):
    """A GPU builds Adam fused and the CPU foreach (the built-in family): a checkpoint written by one resumes on
    the other, its state restored and the optimizer left as this device builds it (here: a fused Adam's
    checkpoint, on the CPU)."""
    net, opt, sched = group()
    state = _read(ckpt.path(ROUNDS), "cpu")
    saved = copy.deepcopy(state["opt"])
    for g in saved["param_groups"]:
        g.update(fused=True, foreach=None)  # as a GPU's fused Adam writes its groups
    _write(ckpt.path(ROUNDS), state | {"opt": saved})
    done, _ = ckpt.load(ROUNDS, state["key"], net, opt, sched)
    assert done == CFG.epochs and "damaged" not in capsys.readouterr().err
    assert all(g["foreach"] and not g["fused"] for g in opt.param_groups)  # this device's Adam
    assert same(opt.state_dict()["state"], state["opt"]["state"])
    net, _, sched = group()  # the other way round: the CPU's checkpoint into a fused Adam, as a GPU builds it
    fused = torch.optim.Adam(net.parameters(), lr=CFG.lr, fused=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(fused, CFG.lr, total_steps=CFG.epochs * 6)
    _write(ckpt.path(ROUNDS), state)
    assert ckpt.load(ROUNDS, state["key"], net, fused, sched)[0] == CFG.epochs
    assert all(g["fused"] is True and not g["foreach"] for g in fused.param_groups)


def test_an_empty_or_cut_checkpoint_is_damaged_not_an_older_format(ckpt, capsys):
    """After a power cut a file may be empty or short: it is told as damaged (one line), never read as the older
    format, which would restart the group without a word."""
    net, opt, sched = group()
    state = _read(ckpt.path(ROUNDS), "cpu")
    for data in (b"", b"digitpairs"):
        ckpt.path(ROUNDS).write_bytes(data)
        assert ckpt.load(ROUNDS, state["key"], net, opt, sched) == (0, [[], []])
        assert "is damaged" in capsys.readouterr().err


def test_a_process_deletes_its_own_temporary_files_only(tmp_path):
    """Two processes may save one group's checkpoint at once (a study shared by two processes): each writes its own
    temporary file, and remove() takes away only this process's (and one left an hour ago by a dead process)."""
    import os
    import time

    from digitpairs.engine.checkpoint import LEFT_S, temporary

    ckpt = Checkpoints(tmp_path / "checkpoints" / "s.sqlite" / "study" / "variant", root=tmp_path / "checkpoints")
    ckpt.folder.mkdir(parents=True)
    path = ckpt.path(ROUNDS)
    mine, theirs, left = temporary(path), path.with_name(f".{path.name}.host-b.12.beef.tmp"), \
        path.with_name(f".{path.name}.host-c.13.dead.tmp")
    for f in (mine, theirs, left, path):
        f.write_bytes(b"x")
    old = time.time() - LEFT_S - 1
    os.utime(left, (old, old))
    ckpt.remove(ROUNDS)
    assert sorted(p.name for p in ckpt.folder.iterdir()) == [theirs.name]
    theirs.unlink()
    ckpt.remove(ROUNDS)
    assert list(tmp_path.iterdir()) == []  # the empty folders up to the root, the root included


def test_a_temporary_file_of_a_dead_process_of_this_host_is_deleted(tmp_path):
    """A worker killed during a save leaves its temporary file: it goes with the group's checkpoint."""
    import subprocess
    import sys

    from digitpairs.base.procfs import HOST

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True).stdout.strip()
    ckpt = Checkpoints(tmp_path / "variant")
    ckpt.folder.mkdir()
    left = ckpt.folder / f".{ckpt.path(ROUNDS).name}.{HOST}.{dead}.cafe.tmp"
    alive = ckpt.folder / f".{ckpt.path(ROUNDS).name}.{HOST}.{os.getppid()}.cafe.tmp"
    for f in (left, alive):
        f.write_bytes(b"x")
    ckpt.remove(ROUNDS)
    assert not left.exists() and alive.exists()
