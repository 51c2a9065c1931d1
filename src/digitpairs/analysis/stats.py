"""Statistics for reports over rounds, from scipy.stats: t-intervals, the paired t-test, the Wilcoxon signed-rank
test; and the Holm correction.

The differences handed to the paired tests come from integer counts of correct pairs (analysis/compare.py), so two rounds
that differ by the same count are equal numbers and tie, as the Wilcoxon test needs.
"""

import math
import statistics

from scipy import stats

WILCOXON_METHODS = {  # how a p-value was computed, as the report names it
    "exact": "exact",  # scipy's exact null distribution: no ties, no zero differences
    "permutation": "all sign flips",  # scipy's default with ties or zeros and n <= 13: exact given the ties
    "asymptotic": "normal approx.",  # scipy's default with ties or zeros and n > 13
    "none": "no differences",  # every difference is zero: p = 1
}


def mean_ci(xs: list[float], level: float = 0.95, bounds: tuple[float, float] = (-math.inf, math.inf)
            ) -> tuple[float, float, float, float]:
    """(mean, SD, low, high) with a t-interval for the mean, cut to the bounds the values cannot leave (an
    accuracy's [0, 1]: with few rounds the t-interval reaches beyond them); SD and interval are nan for fewer
    than 2 values."""
    m = statistics.fmean(xs)
    if len(xs) < 2:
        return m, math.nan, math.nan, math.nan
    sd = statistics.stdev(xs)
    half = float(stats.t.ppf(0.5 + level / 2, len(xs) - 1)) * sd / math.sqrt(len(xs))
    return m, sd, max(m - half, bounds[0]), min(m + half, bounds[1])


def paired_t(diffs: list[float]) -> float:
    """Two-sided p-value of the paired t-test (H0: mean difference 0), as a one-sample t-test on the differences.

    Where the differences do not vary, t is 0/0 or x/0: p is 1 when they are all 0, and undefined (nan, as scipy
    gives: never counted as significant) when they are all the same other number; with fewer than two differences
    there is no test: p is undefined too."""
    if len(diffs) < 2:
        return math.nan
    if len(set(diffs)) == 1:
        return 1.0 if diffs[0] == 0 else math.nan
    return float(stats.ttest_1samp(diffs, 0.0).pvalue)


def wilcoxon(diffs: list[float]) -> tuple[float, str]:
    """Two-sided p-value of the Wilcoxon signed-rank test and the method that computed it (a WILCOXON_METHODS key).

    scipy's exact null distribution where the differences have no ties and no zeros; otherwise scipy's documented
    default (method "auto": every sign flip for up to 13 differences, else the normal approximation), zero
    differences dropped from the ranks ("wilcox")."""
    if not any(diffs):
        return 1.0, "none"
    magnitudes = [abs(d) for d in diffs]
    clean = 0 not in magnitudes and len(set(magnitudes)) == len(magnitudes)
    if clean:
        return float(stats.wilcoxon(diffs, method="exact").pvalue), "exact"
    used = "permutation" if len(diffs) <= 13 else "asymptotic"  # what "auto" picks (scipy >= 1.15)
    return float(stats.wilcoxon(diffs, method="auto").pvalue), used


def holm(pvalues: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the input order."""
    m = len(pvalues)  # an undefined p (nan) stays nan, and still counts among the m tests
    adjusted, running = [math.nan] * m, 0.0
    for rank, i in enumerate(sorted((i for i in range(m) if not math.isnan(pvalues[i])), key=lambda i: pvalues[i])):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def detectable(sd: float, n: int, power: float = 0.8, alpha: float = 0.05) -> float:
    """The smallest mean difference a two-sided paired t-test at level alpha detects with this power, from n
    differences of SD sd (the normal approximation's form with t quantiles): (t_{1-alpha/2} + t_{power}) sd / sqrt(n);
    nan for fewer than 2. "Not confirmed" then reads as too few rounds (the difference is below it) or no effect
    this large."""
    if n < 2 or math.isnan(sd):
        return math.nan
    return (float(stats.t.ppf(1 - alpha / 2, n - 1)) + float(stats.t.ppf(power, n - 1))) * sd / math.sqrt(n)
