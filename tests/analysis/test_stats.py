import math

import numpy as np
import pytest
from scipy import stats

from digitpairs.analysis.stats import holm, mean_ci, paired_t, wilcoxon


def test_mean_ci_is_the_t_interval():
    xs = [0.97, 0.98, 0.96, 0.975]
    m, sd, lo, hi = mean_ci(xs)
    assert m == pytest.approx(0.97125) and sd == pytest.approx(0.0085391, abs=1e-6)
    assert hi - m == pytest.approx(3.182446 * sd / 2, rel=1e-5)  # t(0.975, 3) from the tables
    assert (lo, hi) == pytest.approx(stats.t.interval(0.95, 3, loc=m, scale=stats.sem(xs)))
    assert math.isnan(mean_ci([0.5])[1])
    assert mean_ci([0.5, 1.0], bounds=(0, 1))[2:] == (0, 1)  # t(0.975, 1) = 12.7: the interval cut to [0, 1]


def test_paired_t_against_scipy():
    a, b = [0.91, 0.93, 0.90, 0.95, 0.92], [0.90, 0.90, 0.91, 0.92, 0.90]
    diffs = [x - y for x, y in zip(a, b)]
    assert paired_t(diffs) == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert paired_t([1, 2, 3, 4]) == pytest.approx(0.030466, abs=1e-5)  # t = 3.873, df = 3
    assert math.isnan(paired_t([0.01] * 5)) and paired_t([0.0] * 5) == 1.0 and math.isnan(paired_t([0.3]))


# (differences, the method used): no ties and no zeros: exact; ties or zeros: scipy's default ("auto")
CASES = {
    "distinct": ([1, 2, -3, 4, 5, 6, -7, 8, 9, 10], "exact"),
    "all positive": ([3, 1, 4, 2, 5, 7, 6, 8, 9, 10], "exact"),
    "ties": ([1, 1, 2, -2, 3, 3, 3, 4, -1, 5], "permutation"),
    "zeros": ([0, 0, 2, -1, 3, 4, 5, 6, 7, 8], "permutation"),
    "ties and zeros": ([0, 1, -1, 2, 2, 2, 0, 3, 4, -4], "permutation"),
    "all equal": ([2] * 10, "permutation"),
    "many, with ties": ([1, 2, 2, -1, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 3, -3], "asymptotic"),
    "many, distinct": (list(range(1, 61)) + [-61, -62], "exact"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_wilcoxon_against_scipy(case):
    diffs, method = CASES[case]
    p, used = wilcoxon([d / 1000 for d in diffs])  # as the report gives them: counts over n_test
    assert used == method
    expected = stats.wilcoxon(diffs, method="exact" if method == "exact" else "auto").pvalue
    assert p == pytest.approx(expected, rel=1e-12)
    assert wilcoxon([0, 0, 0]) == (1.0, "none")


def test_equal_counts_tie_where_float32_accuracies_did_not():
    """Two rounds that differ by the same count of correct pairs: their float32 accuracies do not differ by the same
    float, which broke the ties of the old test; differences of counts over n do tie."""
    n = 1000
    a_counts, b_counts = [947, 951, 972, 968], [940, 944, 966, 960]  # differences 7, 7, 6, 8
    a32 = [float(np.float32(c / n)) for c in a_counts]
    b32 = [float(np.float32(c / n)) for c in b_counts]
    floats = [x - y for x, y in zip(a32, b32)]
    assert floats[0] != floats[1]  # the same count, two different numbers
    counts = [(x - y) / n for x, y in zip(a_counts, b_counts)]
    assert counts[0] == counts[1]
    p, used = wilcoxon(counts)
    assert used == "permutation" and p == pytest.approx(stats.wilcoxon([7, 7, 6, 8]).pvalue)
    assert p == pytest.approx(0.125)  # 4 positive differences: 2 of the 16 sign patterns are this extreme


def test_holm():
    assert holm([0.01, 0.04, 0.03, 0.5]) == pytest.approx([0.04, 0.09, 0.09, 0.5])


def test_holm_keeps_an_undefined_p_undefined():
    adjusted = holm([0.01, math.nan, 0.03])
    assert adjusted[0] == pytest.approx(0.03) and math.isnan(adjusted[1]) and adjusted[2] == pytest.approx(0.06)
