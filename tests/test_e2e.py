import csv

import pytest

from tests.support import run_cli


def numbers(table):
    """The table without its wall-time column, which measures the machine."""
    with open(table) as f:
        return [{k: v for k, v in row.items() if k != "wall_s"} for row in csv.DictReader(f)]


@pytest.mark.slow
def test_reproduce_quick_on_real_mnist(tmp_path, real_data_dir):
    store, out = tmp_path / "runs.sqlite", tmp_path / "report"
    args = ["reproduce", "--quick", "--store", store, "--out", out, "--data-dir", real_data_dir]
    p = run_cli(*args)
    assert p.returncode == 0, p.stderr
    assert f"report: {out / 'report.md'}" in p.stdout
    for name in ("table.md", "table.csv", "figure2.png", "report.md"):
        assert (out / name).stat().st_size > 0
    rows = numbers(out / "table.csv")
    assert [r["arch"] for r in rows] == ["transfer", "siamese_nows", "siamese_ws", "siamese_ws_aux",
                                          "siamese_ws_aux_bn", "siamese_ws_aux_bn_drop", "ws_bn_aug_bayes"]
    assert all(r["rounds"] == "2" for r in rows)
    assert rows[-1]["report_mean"] == ""  # beyond the report: marked so in the table and in the report
    assert "beyond the report" in (out / "table.md").read_text()
    assert "## Beyond the report" in (out / "report.md").read_text()
    first = numbers(out / "table.csv")
    again = run_cli(*args)  # resumes: nothing to train, the same table
    assert again.returncode == 0 and "already in" in again.stdout
    assert numbers(out / "table.csv") == first
    fresh = run_cli("reproduce", "--quick", "--store", tmp_path / "other.sqlite", "--out", tmp_path / "o2",
                    "--data-dir", real_data_dir)
    assert fresh.returncode == 0
    assert numbers(tmp_path / "o2" / "table.csv") == first  # the same command gives the same numbers
