"""Statistics for reports over rounds: t-intervals, paired t-test, exact Wilcoxon signed-rank, Holm correction.

Small pure functions (no SciPy): the Student t distribution through the regularized incomplete beta function, and
the Wilcoxon null distribution enumerated exactly (rounds are few).
"""

import math
import statistics


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, c, d = 1e-300, 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        for num in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                    -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1 + num * d
            d = 1 / (d if abs(d) > tiny else tiny)
            c = 1 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1) < 1e-15:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b)."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1) / (a + b + 2):
        return front * _betacf(a, b, x) / a
    return 1 - front * _betacf(b, a, 1 - x) / b


def t_sf2(t: float, df: int) -> float:
    """Two-sided tail probability P(|T| >= |t|) of Student's t with df degrees of freedom."""
    if math.isinf(t):
        return 0.0
    return betainc(df / 2, 0.5, df / (df + t * t))


def t_ppf(q: float, df: int) -> float:
    """The q-quantile (q > 0.5) of Student's t, by bisection on the tail."""
    lo, hi = 0.0, 1e3
    for _ in range(200):
        mid = (lo + hi) / 2
        if t_sf2(mid, df) / 2 > 1 - q:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def mean_ci(xs: list[float], level: float = 0.95) -> tuple[float, float, float, float]:
    """(mean, SD, low, high) with a t-interval for the mean; SD and interval are nan for fewer than 2 values."""
    m = statistics.fmean(xs)
    if len(xs) < 2:
        return m, math.nan, math.nan, math.nan
    sd = statistics.stdev(xs)
    half = t_ppf(0.5 + level / 2, len(xs) - 1) * sd / math.sqrt(len(xs))
    return m, sd, m - half, m + half


def paired_t(diffs: list[float]) -> float:
    """Two-sided p-value of the paired t-test (H0: mean difference 0)."""
    n = len(diffs)
    sd = statistics.stdev(diffs)
    if sd == 0:
        return 1.0 if statistics.fmean(diffs) == 0 else 0.0
    return t_sf2(statistics.fmean(diffs) / (sd / math.sqrt(n)), n - 1)


def wilcoxon(diffs: list[float]) -> float:
    """Two-sided exact p-value of the Wilcoxon signed-rank test; zero differences dropped, ties get mean ranks."""
    d = [x for x in diffs if x != 0]
    n = len(d)
    if n == 0:
        return 1.0
    order = sorted(range(n), key=lambda i: abs(d[i]))
    ranks = [0.0] * n
    i = 0
    while i < n:  # mean ranks over ties of |d|
        j = i
        while j + 1 < n and abs(d[order[j + 1]]) == abs(d[order[i]]):
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    doubled = [round(2 * r) for r in ranks]  # integer rank sums: count them exactly
    w = sum(r for r, x in zip(doubled, d) if x > 0)
    counts = {0: 1}
    for r in doubled:
        nxt = dict(counts)
        for s, c in counts.items():
            nxt[s + r] = nxt.get(s + r, 0) + c
        counts = nxt
    total = 2**n
    low = sum(c for s, c in counts.items() if s <= w) / total
    high = sum(c for s, c in counts.items() if s >= w) / total
    return min(1.0, 2 * min(low, high))


def holm(pvalues: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the input order."""
    m = len(pvalues)
    adjusted, running = [0.0] * m, 0.0
    for rank, i in enumerate(sorted(range(m), key=lambda i: pvalues[i])):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted
