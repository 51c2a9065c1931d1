import csv
import dataclasses
import io
import shutil
import sqlite3
import statistics

import numpy as np
import pytest
from PIL import Image

from digitpairs import UserError
from digitpairs.cli import main as cli
from digitpairs.cli import predict
from digitpairs.data import images
from digitpairs.data.pairs import round_data
from digitpairs.engine.training import train
from digitpairs.predict import kept as keep
from digitpairs.predict.answer import COLUMNS, answer
from digitpairs.spec.config import Config
from digitpairs.spec.registry import arch_config, get_arch
from digitpairs.store import Store, weights
from tests.support import fake_mnist

CFG = Config(size=14, n_pairs=60, n_test=60, epochs=1, precision="fp32")
VARIANTS = ("transfer", "siamese_ws_aux")  # heads "logic" and "mlp"


@pytest.fixture(scope="module")
def store_path(tmp_path_factory):
    """A store with one study of two variants, two rounds each, every model kept; trained on fake data."""
    path = tmp_path_factory.mktemp("predict") / "s.sqlite"
    m = fake_mnist()
    datas = [round_data(m, s, CFG.n_pairs, CFG.n_test, CFG.size) for s in (0, 1)]
    store = Store(path)
    store.ensure_study("st", {"rounds": 2})
    for name in VARIANTS:
        arch = get_arch(name)
        cfg = arch_config(arch, CFG)
        arch = dataclasses.replace(arch, extra={})
        results = train(arch, cfg, datas, [0, 1], [0, 1])
        config = {"config": cfg.to_dict(), "arch": arch.to_dict(), "sweep": {}}
        store.add_runs("st", name, config, results)
        with store.transaction() as db:  # Store.add_runs keeps them too; a model stored twice is kept once
            weights.save(db, "st", name, results)
    store.close()
    return path


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """Four digit images in several forms: a.png, b.jpg (inverted, RGB), c.png, d.png."""
    folder = tmp_path_factory.mktemp("digits")
    m = fake_mnist(seed=1)["test_images"]
    Image.fromarray(m[0]).save(folder / "a.png")
    Image.fromarray(255 - m[1]).convert("RGB").resize((84, 84)).save(folder / "b.jpg")
    Image.fromarray(m[2]).save(folder / "c.png")
    Image.fromarray(m[3]).resize((56, 40)).save(folder / "d.png")
    return folder


def run(capsys, *args):
    rc = cli.main(["predict", *map(str, args)])
    out, err = capsys.readouterr()
    return rc, out, err


def expected(store_path, arch, rounds, first, second) -> list[dict]:
    models = [keep.load_model(store_path, "st", arch, r) for r in rounds]
    return answer(models, [images.read(p) for p in first], [images.read(p) for p in second])


def test_two_images_with_the_study_models_ensemble(capsys, tmp_path, store_path, digits):
    """Without a validation split, the variant the study file names (never the best on the test pairs), all its
    rounds; without one named either, the user names it."""
    rc, out, err = run(capsys, digits / "a.png", digits / "b.jpg", "--store", store_path)
    assert rc == 2 and not out and err.startswith("digitpairs: error: study 'st' has no validation split to choose "
                                                  "a variant by (its study file names no `model`)")
    assert err.endswith("choose one with --arch (siamese_ws_aux, transfer)\n") and len(err.splitlines()) == 1
    named = shutil.copy(store_path, tmp_path / "named.sqlite")
    s = Store(named)
    runs = s.runs("st")
    worst = min(VARIANTS, key=lambda a: statistics.fmean(r["test_acc"] for r in runs if r["arch"] == a))
    s.ensure_study("st", {"rounds": 2, "model": worst})
    s.close()
    rc, out, err = run(capsys, digits / "a.png", digits / "b.jpg", "--store", named)
    assert rc == 0, err
    [a] = expected(store_path, worst, [0, 1], [digits / "a.png"], [digits / "b.jpg"])
    assert out.splitlines() == [
        f"model: study st, variant {worst}, rounds 0, 1 (an ensemble of 2)",
        f"first:  {digits / 'a.png'} reads {a['digit_first']} (p {a['p_first']:.3f})",
        f"second: {digits / 'b.jpg'} reads {a['digit_second']} (p {a['p_second']:.3f})",
        f"P(first <= second) = {a['p_le']:.3f}",
        f"answer: first {'<=' if a['first_le_second'] else '>'} second"]


@pytest.mark.parametrize("arch", VARIANTS)
def test_a_csv_of_pairs_gets_its_answers(capsys, tmp_path, store_path, digits, arch):
    pairs = digits / "pairs.csv"
    pairs.write_text("id,first,second\n1,a.png,b.jpg\n2,c.png,d.png\n3,b.jpg,a.png\n")
    rc, out, err = run(capsys, "--pairs", pairs, "--store", store_path, "--arch", arch, "--round", 1)
    assert rc == 0 and err == f"model: study st, variant {arch}, round 1\n"
    rows = list(csv.DictReader(io.StringIO(out)))
    assert list(rows[0]) == ["id", "first", "second", *COLUMNS] and [r["id"] for r in rows] == ["1", "2", "3"]
    want = expected(store_path, arch, [1], [digits / n for n in ("a.png", "c.png", "b.jpg")],
                    [digits / n for n in ("b.jpg", "d.png", "a.png")])
    for row, a in zip(rows, want):
        assert int(row["digit_first"]) == a["digit_first"] and float(row["p_le"]) == round(a["p_le"], 4)
        le = row["first_le_second"] == "true"
        if arch == "transfer":  # the logic head: the digits read decide
            assert le == (a["digit_first"] <= a["digit_second"])
        else:  # the learned comparison: its probability decides
            assert le == (a["p_le"] > 0.5)
    rc, _, err = run(capsys, "--pairs", pairs, "--store", store_path, "--arch", arch, "--round", 1,
                     "--out", tmp_path / "answers.csv")
    assert rc == 0 and err.endswith(f"answers: {tmp_path / 'answers.csv'}\n")
    assert (tmp_path / "answers.csv").read_text() == out


def pairs_file(path, text):
    path.write_text(text)
    return ["--pairs", path]


@pytest.mark.parametrize("case, match", [
    ("missing image", "No such file"),
    ("blank image", "holds no ink"),
    ("three images", "not 3 images"),
    ("images and pairs", "not both"),
    ("out without pairs", "--out writes the answers of --pairs"),
    ("no column", "no column second"),
    ("empty cell", "row 2: the second image is empty"),
    ("out is the pairs file", "is the pairs file: name another file"),
    ("out is the store", "is the store: name another file"),
    ("out is the store's log", "is the store: name another file"),
    ("out is an image", "is one of its images"),
    ("out is a folder", "exists and is not a plain file"),
    ("out is a link", "exists and is not a plain file"),
    ("out unwritable", "cannot write"),
    ("unknown variant", "choose from siamese_ws_aux, transfer"),
    ("unknown study", "no study 'nope'"),
    ("unknown round", "kept rounds 0, 1"),
    ("no store", "no store at"),
    ("store without models", "written before models were kept"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, tmp_path, store_path, digits, case, match):
    a, b = digits / "a.png", digits / "b.jpg"
    Image.fromarray(np.full((30, 30), 200, np.uint8)).save(tmp_path / "blank.png")
    (tmp_path / "a file").write_text("")
    link = tmp_path / "link.csv"
    link.symlink_to(tmp_path / "a file")
    before = store_path.read_bytes()
    old = tmp_path / "old.sqlite"  # the same study in a store written before models were kept
    shutil.copy(store_path, old)
    with sqlite3.connect(old) as db:
        db.execute("DROP TABLE models")
    args = {
        "missing image": [a, tmp_path / "none.png"],
        "blank image": [a, tmp_path / "blank.png"],
        "three images": [a, b, a],
        "images and pairs": [a, b, "--pairs", tmp_path / "p.csv"],
        "out without pairs": [a, b, "--out", tmp_path / "o.csv"],
        "no column": pairs_file(tmp_path / "p1.csv", "first,other\na.png,b.jpg\n"),
        "empty cell": pairs_file(tmp_path / "p2.csv", "first,second\na.png,b.jpg\nc.png,\n"),
        "out is the pairs file": pairs_file(tmp_path / "p3.csv", "first,second\na.png,b.jpg\n") + [
            "--out", tmp_path / "." / "p3.csv"],
        "out is the store": pairs_file(digits / "ok.csv", "first,second\na.png,b.jpg\n") + ["--out", store_path],
        "out is the store's log": pairs_file(digits / "ok.csv", "first,second\na.png,b.jpg\n") + [
            "--out", f"{store_path}-wal"],
        "out is an image": pairs_file(digits / "ok.csv", "first,second\na.png,b.jpg\n") + ["--out", a],
        "out is a folder": pairs_file(digits / "ok.csv", "first,second\na.png,b.jpg\n") + ["--out", tmp_path],
        "out is a link": pairs_file(digits / "ok.csv", "first,second\na.png,b.jpg\n") + [
            "--out", link],
        "out unwritable": pairs_file(digits / "ok.csv", "first,second\na.png,b.jpg\n") + [
            "--out", tmp_path / "a file" / "o.csv"],
        "unknown variant": [a, b, "--arch", "siamese_nows"],
        "unknown study": [a, b, "--study", "nope"],
        "unknown round": [a, b, "--round", 5],
        "no store": [a, b, "--store", tmp_path / "none.sqlite"],
        "store without models": [a, b, "--store", old],
    }[case]
    if "--store" not in args:
        args = [*args, "--store", store_path]
    if "--arch" not in args:  # the study has no validation split: predict asks which variant
        args = [*args, "--arch", "siamese_ws_aux"]
    rc, out, err = run(capsys, *args)
    assert rc == 2 and out == "" and len(err.splitlines()) == 1 and match in err, err
    assert store_path.read_bytes() == before and (tmp_path / "a file").read_text() == "" and a.stat().st_size
    if case == "out is the pairs file":
        assert (tmp_path / "p3.csv").read_text() == "first,second\na.png,b.jpg\n"


def test_a_loop_of_links_is_one_line(tmp_path):
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    predict.check_out(tmp_path / "o.csv", {"one of its images": [loop]})  # an input's loop: reading it says so
    with pytest.raises(UserError, match="exists and is not a plain file"):
        predict.check_out(loop, {})
    with pytest.raises(UserError, match="cannot write .*loop"):
        predict.check_out(loop / "o.csv", {})


def test_out_in_a_folder_it_may_not_read_is_one_line(tmp_path, monkeypatch):
    out = tmp_path / "locked" / "o.csv"

    def denied(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(type(out), "is_symlink", denied)
    with pytest.raises(UserError, match="cannot write .*Permission denied"):
        predict.check_out(out, {})
