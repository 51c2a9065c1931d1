import math

import pytest

from digitpairs.stats import holm, mean_ci, paired_t, t_ppf, t_sf2, wilcoxon


def test_t_distribution_against_tables():
    assert t_ppf(0.975, 9) == pytest.approx(2.262157, abs=1e-5)
    assert t_ppf(0.975, 1) == pytest.approx(12.7062, abs=1e-3)
    assert t_sf2(1.0, 5) == pytest.approx(0.363217, abs=1e-5)
    assert t_sf2(0.0, 7) == pytest.approx(1.0)


def test_mean_ci():
    m, sd, lo, hi = mean_ci([0.97, 0.98, 0.96, 0.975])
    assert m == pytest.approx(0.97125) and sd == pytest.approx(0.0085391, abs=1e-6)
    assert (lo + hi) / 2 == pytest.approx(m) and hi - m == pytest.approx(3.182446 * sd / 2, rel=1e-5)
    assert math.isnan(mean_ci([0.5])[1])


def test_paired_tests():
    assert wilcoxon([1] * 10) == pytest.approx(2 / 1024)
    assert wilcoxon([1, 2, -3, 4, 5, 6, -7, 8, 9, 10]) == pytest.approx(0.083984375)  # exact, n = 10
    assert wilcoxon([0, 0, 0]) == 1.0
    assert paired_t([0.01] * 5) == 0.0 and paired_t([0.0] * 5) == 1.0
    assert paired_t([1, 2, 3, 4]) == pytest.approx(0.030466, abs=1e-5)  # t = 3.873, df = 3


def test_holm():
    assert holm([0.01, 0.04, 0.03, 0.5]) == pytest.approx([0.04, 0.09, 0.09, 0.5])
