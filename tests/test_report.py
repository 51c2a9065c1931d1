import shutil
import subprocess

import pytest

from conftest import run_cli
from digitpairs.report import compare, summarise, write_report
from digitpairs.store import Store
from digitpairs.train import RunResult

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


def test_paired_comparison_in_words(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    fill(store, {"a": [0.90, 0.91, 0.92], "b": [0.95, 0.97, 0.96]})
    (c,) = compare(summarise(SPEC, store.runs("st")), 3)
    assert c["a"]["arch"] == "b" and c["wins"] == 3 and c["diff"] == pytest.approx(0.05)


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


@pytest.mark.slow
def test_alpha_study_quick_chooses_on_validation(tmp_path, real_data_dir):
    from digitpairs.studyfile import shipped

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
def test_html_report_renders_in_chromium(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    fill(store, {"a": [0.90, 0.91, 0.92], "b": [0.95, 0.97, 0.96]})
    out = tmp_path / "out"
    write_report(store, "st", out)
    page = (out / "report.html").read_text()
    check = """<script>window.addEventListener('load', () => {
      const imgs = [...document.images];
      const shown = imgs.filter(i => i.complete && i.naturalWidth > 0 && i.getBoundingClientRect().height > 0);
      const rows = [...document.querySelectorAll('table tr')].filter(r => r.getBoundingClientRect().height > 0);
      document.body.setAttribute('data-check', `images ${shown.length}/${imgs.length} rows ${rows.length}`);
    });</script>"""
    (out / "check.html").write_text(page.replace("</body>", check + "</body>"))
    p = subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                        "--disable-background-networking", "--disable-component-update", "--disable-sync",
                        f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=3000", "--dump-dom",
                        (out / "check.html").as_uri()], capture_output=True, text=True, timeout=120, check=False)
    assert 'data-check="images 2/2 rows' in p.stdout, p.stderr[-2000:]
    rows = int(p.stdout.split('data-check="images 2/2 rows ')[1].split('"')[0])
    assert rows >= 4  # the accuracy table (header + 2) and the comparison table
