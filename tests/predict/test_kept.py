import dataclasses
import io
import json
import sqlite3
from pathlib import Path

import pytest
import torch

from digitpairs import UserError
from digitpairs.data.pairs import round_data
from digitpairs.engine.evaluate import evaluate
from digitpairs.engine.training import train
from digitpairs.export.mlflow import attach
from digitpairs.model.weights import from_bytes
from digitpairs.predict import kept as keep
from digitpairs.spec.config import Config
from digitpairs.spec.registry import arch_config, get_arch
from digitpairs.store import Store, weights
from tests.support import fake_mnist

ARCH = dataclasses.replace(get_arch("siamese_ws_aux_bn"), extra={})  # BatchNorm: running statistics kept too
CFG = Config(size=14, n_pairs=100, n_test=100, epochs=2, precision="fp32", members=2)


@pytest.fixture(scope="module")
def trained():
    """Two rounds of ARCH trained as one group, an ensemble of 2 members each: their data and results."""
    m = fake_mnist()
    datas = [round_data(m, s, CFG.n_pairs, CFG.n_test, CFG.size) for s in (0, 1)]  # 14x14: 4x less work
    return datas, train(ARCH, CFG, datas, [0, 1], [0, 1], groups=[2])


def stored(path, results, keep_models=True) -> Store:
    config = {"config": CFG.to_dict(), "arch": ARCH.to_dict(), "sweep": {}}
    store = Store(path)
    store.ensure_study("st", {"rounds": 2})
    store.add_runs("st", ARCH.name, config, results)
    if keep_models:  # Store.add_runs keeps them; saved again here: a model already stored is kept as it is
        with store.transaction() as db:
            weights.save(db, "st", ARCH.name, results)
    return store


@pytest.fixture(scope="module")
def kept(tmp_path_factory, trained):
    datas, results = trained
    store = stored(tmp_path_factory.mktemp("keep") / "s.sqlite", results)
    yield store, datas, results
    store.close()


def test_a_kept_model_is_the_trained_one(kept):
    store, datas, results = kept
    for r, data in zip(results, datas):
        net, cfg, norm = keep.load_model(store, "st", ARCH.name, r.round)
        assert not net.training and net.k == cfg.members == 2 and cfg == arch_config(ARCH, CFG)
        assert norm == (data.mean, data.std) == r.norm
        state = net.state_dict()
        assert state.keys() == from_bytes(r.weights).keys()
        assert all(torch.equal(state[k], from_bytes(r.weights)[k]) for k in state)
        correct = evaluate(net, data.test_x[None], data.test_classes[None], cfg.precision, cfg.members, cfg.tta)
        assert int(correct) == r.test_correct  # the run's stored test accuracy, from the reloaded model


def test_a_model_loads_from_the_store_path_alone(kept):
    store, _, results = kept
    net, _, _ = keep.load_model(store.path, "st", ARCH.name, 1)
    assert torch.equal(net.state_dict()["branches.0.fc2.weight"], from_bytes(results[1].weights)["branches.0.fc2.weight"])
    assert weights.kept(store, "st") == {ARCH.name: [0, 1]}


def test_unknown_study_variant_or_round_is_one_line(kept):
    store = kept[0]
    for args, match in [(("nope", ARCH.name, 0), "no study 'nope'"),
                        (("st", "siamese_ws", 0), "choose from siamese_ws_aux_bn"),
                        (("st", ARCH.name, 7), "kept rounds 0, 1")]:
        with pytest.raises(UserError, match=match) as e:
            keep.load_model(store, *args)
        assert "\n" not in str(e.value)


def test_a_store_written_before_has_no_kept_model_and_reads_fine(tmp_path, trained):
    results = trained[1]
    store = stored(tmp_path / "old.sqlite", results, keep_models=False)
    store.db.execute("DROP TABLE IF EXISTS models")  # as the stores written before models were kept
    try:
        assert weights.kept(store, "st") == {}
        assert [r["test_acc"] for r in store.runs("st")] == [r.test_acc for r in results]
        with pytest.raises(UserError, match="written before models were kept"):
            keep.load_model(store, "st", ARCH.name, 0)
        with store.transaction() as db:  # a study run with --no-keep-models: runs without weights
            assert weights.save(db, "st", ARCH.name, [dataclasses.replace(r, weights=None) for r in results]) == 0
        with pytest.raises(UserError, match="no-keep-models"):
            keep.load_model(store, "st", ARCH.name, 0)
    finally:
        store.close()


class Payload:
    def __reduce__(self):
        return (print, ("code ran",))


@pytest.mark.parametrize("blob", [b"not weights", "pickled code"])
def test_damaged_or_hostile_weights_are_refused_in_one_line(tmp_path, trained, blob, capsys):
    store = stored(tmp_path / "s.sqlite", trained[1])
    if blob == "pickled code":  # weights_only: the payload is refused, never called
        buf = io.BytesIO()
        torch.save({"x": Payload()}, buf)
        blob = buf.getvalue()
    with store.transaction() as db:
        db.execute("UPDATE models SET weights = ? WHERE round = 0", (sqlite3.Binary(blob),))
    try:
        with pytest.raises(UserError, match="cannot be read") as e:
            keep.load_model(store, "st", ARCH.name, 0)
        assert "\n" not in str(e.value) and "code ran" not in capsys.readouterr().out
    finally:
        store.close()


def test_a_kept_model_is_attached_to_its_mlflow_run(kept):
    store, _, results = kept
    logged = {}

    class Client:  # the one call attach makes on mlflow.MlflowClient
        def log_artifacts(self, run_id, folder, artifact_path):
            logged[run_id] = artifact_path, {p.name: p.read_bytes() for p in Path(folder).iterdir()}

    assert attach(Client(), "run0", store, "st", ARCH.name, 0)
    assert not attach(Client(), "run7", store, "st", ARCH.name, 7) and "run7" not in logged
    folder, files = logged["run0"]
    state = torch.load(io.BytesIO(files["weights.pt"]), weights_only=True)
    meta = json.loads(files["model.json"])
    assert folder == "model" and all(torch.equal(state[k], from_bytes(results[0].weights)[k]) for k in state)
    assert (meta["norm"]["mean"], meta["norm"]["std"]) == results[0].norm and meta["config"]["members"] == 2
