import sqlite3

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from digitpairs.analysis import answers as analysis_answers
from digitpairs.data.pairs import round_data
from digitpairs.engine.training import train
from digitpairs.spec.config import Config
from digitpairs.spec.records import MAX_WRONG
from digitpairs.store import Store, answers
from tests.support import fake_mnist

CFG = Config(size=14, n_pairs=100, n_test=100, epochs=2, precision="fp32")
MNIST = fake_mnist()


def datas(seeds, size=14):
    return [round_data(MNIST, s, CFG.n_pairs, CFG.n_test, size) for s in seeds]


@pytest.fixture(scope="module")
def runs():
    return train("transfer", CFG, datas([0, 1]), [0, 1], [0, 1], groups=[2])


def test_answers_agree_with_the_count_and_the_test_pairs(runs):
    """A run's answers give its stored count of correct pairs; the indices name the MNIST test images of its pairs;
    the wrong pairs' pixels are those images as the network saw them (pooled at size 14), before normalisation."""
    for r, data in zip(runs, datas([0, 1])):
        a = r.answers
        truth = a["classes"][:, 0] <= a["classes"][:, 1]
        assert (a["answer"] == truth).sum() == r.test_correct and len(a["answer"]) == CFG.n_test
        assert np.array_equal(MNIST["test_labels"][a["test_idx"]], a["classes"])
        wrong = np.flatnonzero(a["answer"] != truth)
        assert np.array_equal(a["wrong_at"], wrong[:MAX_WRONG]) and len(a["wrong"]) == len(a["wrong_at"])
        seen = F.avg_pool2d(torch.from_numpy(MNIST["test_images"][a["test_idx"][a["wrong_at"]]]).float(), 2)
        assert np.allclose(a["wrong"], seen.round().numpy(), atol=1)  # round(x * std + mean) of the normalised
        assert 0 <= analysis_answers.digit_accuracy(a) <= 1


@pytest.mark.parametrize("arch", ["siamese_ws_aux", "prob"])
def test_p_le_is_what_the_answer_comes_from(arch):
    """With the mlp head P(a <= b) is the head's probability, with the prob head the digits': the answer is
    P(a <= b) > 1/2 for both (the logic head answers from the digits' argmax instead)."""
    import dataclasses

    from digitpairs.spec.registry import get_arch

    a = get_arch("siamese_ws") if arch == "prob" else get_arch(arch)
    a = dataclasses.replace(a, head="prob") if arch == "prob" else a
    (r,) = train(a, CFG, datas([2]), [2], [2])
    assert np.array_equal(r.answers["answer"], r.answers["p_le"] > 0.5)


def test_answers_round_trip_through_the_store(tmp_path, runs):
    store = Store(tmp_path / "s.sqlite")
    store.ensure_study("st", {"rounds": 2})
    assert len(store.add_runs("st", "transfer", {}, runs)) == 2  # the runs, and their answers with them
    with store.transaction() as db:
        assert answers.save(db, "st", "transfer", runs) == 0  # stored answers are kept as they are
    found = answers.load(store.db, "st")
    assert set(found) == {"transfer"} and set(found["transfer"]) == {0, 1}
    for r in runs:
        back = found["transfer"][r.round]
        for key in answers.DTYPES:
            assert np.array_equal(back[key], np.asarray(r.answers[key]).astype(answers.DTYPES[key])), key
        assert back["correct"].sum() == r.test_correct
    right, total = analysis_answers.grid(list(found["transfer"].values()))
    assert total.sum() == 2 * CFG.n_test and right.sum() == sum(r.test_correct for r in runs)
    store.db.execute("UPDATE answers SET p_le = x'00' WHERE round = 1")  # a damaged row: left out, not a crash
    assert set(answers.load(store.db, "st")["transfer"]) == {0}
    store.close()


def test_a_store_without_answers_reads_as_none(tmp_path):
    db = sqlite3.connect(tmp_path / "old.sqlite")
    assert answers.load(db, "st") == {}


def test_a_group_resumed_after_its_last_epoch_answers_the_same(tmp_path, runs):
    """Killed after the last epoch's checkpoint and before its runs were stored: the resumed group trains nothing
    and evaluates again, with the same answers."""
    from digitpairs.engine.checkpoint import Checkpoints

    ckpt = Checkpoints(tmp_path / "unit")
    first = train("transfer", CFG, datas([0, 1]), [0, 1], [0, 1], groups=[2], checkpoints=ckpt)
    ticks = []
    again = train("transfer", CFG, datas([0, 1]), [0, 1], [0, 1], groups=[2], checkpoints=ckpt,
                  on_epoch=ticks.append)
    assert ticks == [2 * CFG.epochs]  # nothing trained
    for a, b, c in zip(first, again, runs):
        assert all(np.array_equal(a.answers[k], b.answers[k]) for k in answers.COLUMNS if k != "side")
        assert all(np.array_equal(a.answers[k], c.answers[k]) for k in ("answer", "read"))
