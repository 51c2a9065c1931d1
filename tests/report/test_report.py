import html
import shutil
import subprocess

import numpy as np
import pytest
from scipy import stats

from digitpairs.analysis import answers as analysis_answers
from digitpairs.analysis.compare import compare, summarise
from digitpairs.data.pairs import round_for
from digitpairs.engine.training import train
from digitpairs.report.write import write_report
from digitpairs.runner.driver import run_config
from digitpairs.spec import studyfile
from digitpairs.spec.records import RunResult
from digitpairs.store import Store, answers
from tests.support import SPEC, fake_mnist, fill, run_cli

TINY = """
name = "tiny"
rounds = 3
archs = ["transfer", "siamese_ws", "siamese_ws_aux"]
[config]
size = 14
n_pairs = 100
n_test = 100
epochs = 2
precision = "fp32"
[[claims]]
better = "transfer"
worse = "siamese_ws"
text = "TransferLearn beats Siamese WS."
[[claims]]
same = ["siamese_ws", "siamese_ws_aux"]
text = "The auxiliary loss changes nothing."
[[claims]]
better = "siamese_ws_aux_bn"
worse = "siamese_ws_aux"
text = "BatchNorm improves WS,AUX."
"""


@pytest.fixture(scope="module")
def explained(tmp_path_factory):
    """A tiny study trained on fake MNIST and stored with its answers (Store.add_runs saves them; here too, in case
    it does not), and its report."""
    tmp = tmp_path_factory.mktemp("explained")
    study = studyfile.build(__import__("tomllib").loads(TINY), "tiny.toml")
    mnist = fake_mnist()
    store = Store(tmp / "s.sqlite")
    spec = study.spec()
    for v in spec["variants"]:
        v["group_rounds"] = 3
    store.ensure_study("tiny", spec)
    for v in study.variants:
        results = train(v.arch, v.cfg, [round_for(mnist, v.cfg, r) for r in range(3)], [0, 1, 2],
                        [v.cfg.seed + r for r in range(3)], groups=[3])
        store.add_runs("tiny", v.name, run_config(v), results)
        with store.transaction() as db:
            answers.save(db, "tiny", v.name, results)
    write_report(store, "tiny", tmp / "out")
    yield store, tmp / "out"
    store.close()


def test_the_report_explains_from_the_store(explained):
    store, out = explained
    text = (out / "report.md").read_text()
    for png in ("rounds.png", "heatmap.png", "gallery.png", "figure2.png"):
        assert (out / png).stat().st_size > 10_000 and f"]({png})" in text
    digits = text.split("### Digit accuracy of the branch")[1].split("###")[0]
    assert "`transfer`) | digits |" in digits and "`siamese_ws_aux`) | comparison+digits |" in digits
    assert "`siamese_ws`)" not in digits  # it learns from the comparison alone: its digits mean nothing
    found = answers.load(store.db, "tiny")
    for name in ("transfer", "siamese_ws_aux"):
        mean = np.mean([analysis_answers.digit_accuracy(run) for run in found[name].values()])
        assert f"`{name}`) | {'digits' if name == 'transfer' else 'comparison+digits'} | {mean:.4f} |" in digits
    best = max(summarise(store.study_config("tiny"), store.runs("tiny")), key=lambda r: r["mean"])
    assert f"Test pairs of every round of {best['label']}" in text and f"Wrong test pairs of {best['label']}" in text
    claims = text.split("## Claims, checked")[1].split("##")[0]
    assert claims.count("| TransferLearn beats Siamese WS. | transfer better than siamese_ws |") == 1
    assert "| siamese_ws_aux_bn not in this study | not checked |" in claims
    assert sum(claims.count(f"| {v} |") for v in ("confirmed", "not confirmed", "contradicted")) == 2


def test_a_store_without_answers_or_claims_says_so(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    fill(store, {"a": [0.90, 0.91, 0.92], "b": [0.95, 0.97, 0.96]})
    write_report(store, "st", tmp_path / "out")
    text = (tmp_path / "out" / "report.md").read_text()
    assert "This store holds no per-pair answers" in text and "Claims" not in text and "](rounds.png)" in text


def test_paired_comparison_in_words(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    fill(store, {"a": [0.90, 0.91, 0.92], "b": [0.95, 0.97, 0.96]})
    (c,) = compare(summarise(SPEC, store.runs("st")), 3)
    assert c["a"]["arch"] == "b" and c["wins"] == 3 and c["diff"] == pytest.approx(0.05)


def test_comparisons_use_counts_and_match_scipy(tmp_path):
    """Stored accuracies that went through float32 (947/1000 and 940/1000 differ by 7 pairs, as do 951 and 944): the
    comparison recovers the counts, so those rounds tie, and its p-values are scipy's on the count differences."""
    spec = {**SPEC, "rounds": 6}
    a_counts, b_counts = [947, 951, 972, 968, 955, 961], [940, 944, 966, 960, 955, 962]
    store = Store(tmp_path / "s.sqlite")
    store.ensure_study("st", spec)
    for name, counts in (("a", a_counts), ("b", b_counts)):
        store.add_runs("st", name, {"config": {"n_test": 1000}}, [
            RunResult(r, r, float(np.float32(c / 1000)), None, 10, 1.0, 1, []) for r, c in enumerate(counts)])
    (c,) = compare(summarise(spec, store.runs("st")), 6)
    diffs = [x - y for x, y in zip(a_counts, b_counts)]  # 7, 7, 6, 8, 0, -1: ties and a zero
    assert c["a"]["arch"] == "a" and c["wins"] == 4 and c["diff"] == pytest.approx(sum(diffs) / 6000)
    assert c["p_w"] == pytest.approx(stats.wilcoxon(diffs).pvalue) and c["w_method"] == "permutation"
    assert c["p_t"] == pytest.approx(stats.ttest_1samp(diffs, 0).pvalue)
    assert (c["lo"], c["hi"]) == pytest.approx([d / 1000 for d in stats.t.interval(
        0.95, 5, loc=np.mean(diffs), scale=stats.sem(diffs))])
    write_report(store, "st", tmp_path / "out")
    assert "| all sign flips |" in (tmp_path / "out" / "report.md").read_text()


def test_missing_round_refuses_the_comparison(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    fill(store, {"a": [0.90, 0.91, 0.92], "b": [0.95, None, 0.96]})
    rows = summarise(SPEC, store.runs("st"))
    assert rows[1]["missing"] == [1]
    (c,) = compare(rows, 3)
    assert "not compared" in c["skip"]
    write_report(store, "st", tmp_path / "out")
    text = (tmp_path / "out" / "report.md").read_text()
    assert "2/3 (missing [1])" in text and "B lacks round(s) [1]" in text


def test_a_variant_without_a_finished_run_is_named(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    fill(store, {"a": [0.90, 0.91, 0.92]})  # b: stopped before its first group finished
    write_report(store, "st", tmp_path / "out")
    assert "Not run yet (no finished round): b;" in (tmp_path / "out" / "report.md").read_text()


@pytest.mark.slow
def test_alpha_study_quick_chooses_on_validation(tmp_path, real_data_dir):
    from digitpairs.spec.studyfile import shipped

    out = tmp_path / "alpha"
    p = run_cli("run", shipped("alpha"), "--quick", "--store", tmp_path / "s.sqlite", "--out", out,
                "--data-dir", real_data_dir)
    assert p.returncode == 0, p.stderr
    text = (out / "report.md").read_text()
    assert (out / "sweep_alpha.png").stat().st_size > 0 and "Chosen on validation accuracy" in text
    assert (out / "report.html").read_text().count("data:image/png;base64,") >= 2


def chromium():
    for name in ("chromium", "chromium-browser"):
        if shutil.which(name):
            return shutil.which(name)
    return None


@pytest.mark.skipif(chromium() is None, reason="Chromium is not installed (scripts/test.sh installs it)")
def test_html_report_renders_in_chromium(tmp_path, explained):
    """Every figure of the report (the rounds, the heatmaps, the gallery, Figure 2, the curves) is drawn in
    Chromium, at least 500 pixels wide, and its tables have their rows."""
    _, out = explained
    page = (out / "report.html").read_text()
    check = """<script>window.addEventListener('load', () => {
      const imgs = [...document.images];
      const shown = imgs.filter(i => i.complete && i.naturalWidth > 0 && i.getBoundingClientRect().width >= 500);
      const rows = [...document.querySelectorAll('table tr')].filter(r => r.getBoundingClientRect().height > 0);
      const alts = shown.map(i => i.alt).join(';');
      document.body.setAttribute('data-check', `images ${shown.length}/${imgs.length} rows ${rows.length}`);
      document.body.setAttribute('data-alts', alts);
    });</script>"""
    (out / "check.html").write_text(page.replace("</body>", check + "</body>"))
    p = subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                        "--disable-background-networking", "--disable-component-update", "--disable-sync",
                        f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=3000", "--dump-dom",
                        (out / "check.html").as_uri()], capture_output=True, text=True, timeout=120, check=False)
    n = page.count("<img ")  # the figures above, and the failed rounds' curves where a round failed
    assert f'data-check="images {n}/{n} rows' in p.stdout, p.stderr[-2000:]
    alts = [a for a in html.unescape(p.stdout.split('data-alts="')[1].split('"')[0]).split(";")
            if a != "the failed rounds' curves"]
    assert alts == ["test accuracy of every round", "comparison accuracy by digit pair", "wrong test pairs", "Figure 2",
                    "curves"]
    rows = int(p.stdout.split(f'data-check="images {n}/{n} rows ')[1].split('"')[0])
    assert rows >= 4 + 4 + 3 + 4  # the accuracy, comparison, digit accuracy and claims tables, header included


def test_the_device_column_names_the_gpu_options_that_were_on():
    from digitpairs.report.provenance import provenance_blocks

    run = {"package_version": "0.2.0", "code_hash": "h", "git_commit": None, "torch_version": "2.13.0"}
    runs = [run | {"device": "NVIDIA H200", "config": {"config": {"cuda_graphs": True, "matmul_conv": True}}},
            run | {"device": "NVIDIA H200", "config": {"config": {}}}, run | {"device": None, "config": {}}]
    rows = provenance_blocks(runs)[1][2]
    assert sorted(r[4] for r in rows) == ["(not recorded)", "NVIDIA H200",
                                          "NVIDIA H200, CUDA graphs, matmul convolutions"]


def test_a_report_folder_is_replaced_as_a_whole(tmp_path):
    """The files of an earlier report that the new one lacks (here a sweep's figure) go; a folder of the user's
    (`--out .`) keeps the user's files; nothing is left of the folders the report was built in."""
    from digitpairs.report.folder import MANIFEST

    store = Store(tmp_path / "s.sqlite")
    fill(store, {"a": [0.90, 0.91, 0.92], "b": [0.95, 0.97, 0.96]})
    out = tmp_path / "st"
    write_report(store, "st", out)
    first = {p.name for p in out.iterdir()}
    assert {"report.md", "table.csv", MANIFEST} <= first
    (out / "sweep_alpha.png").write_bytes(b"an earlier report's figure")
    (out / MANIFEST).write_text((out / MANIFEST).read_text() + "sweep_alpha.png\n")
    write_report(store, "st", out)
    assert {p.name for p in out.iterdir()} == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.sqlite", "s.sqlite-shm", "s.sqlite-wal", "st"]
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("the user's")
    (mine / "sweep_alpha.png").write_bytes(b"an earlier report's figure")
    (mine / MANIFEST).write_text("sweep_alpha.png\n")
    write_report(store, "st", mine)
    assert {p.name for p in mine.iterdir()} == first | {"notes.txt"} and (mine / "notes.txt").read_text() == "the user's"
    store.close()


def test_a_report_folder_has_the_modes_of_any_folder_and_a_link_to_one_stays(tmp_path):
    import os

    store = Store(tmp_path / "s.sqlite")
    fill(store, {"a": [0.90, 0.91, 0.92]})
    umask = os.umask(0o022)
    try:
        write_report(store, "st", tmp_path / "st")
        assert (tmp_path / "st").stat().st_mode & 0o777 == 0o755
        real = tmp_path / "real"
        real.mkdir()
        (tmp_path / "link").symlink_to(real)
        write_report(store, "st", tmp_path / "link")
    finally:
        os.umask(umask)
    assert (tmp_path / "link").is_symlink() and (real / "report.md").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    store.close()
