"""The studies of a store at a glance, and two studies compared (in one store or two): each variant they share,
paired by round seed (round r of a study has seed `seed + r`: the same pairs and initialisation), with the mean
difference, its 95% interval, the paired t-test's p and the rounds won; and whether the two differ in code,
device or config. No torch."""

from fractions import Fraction

from digitpairs.analysis.compare import correct
from digitpairs.analysis.stats import mean_ci, paired_t
from digitpairs.spec.config import what_it_trains


def overview(name: str, spec: dict, runs: list[dict]) -> dict:
    """One study: its variants, rounds done and planned, code versions, devices, and its last stored run."""
    return {"study": name, "variants": [v["name"] for v in spec.get("variants", [])],
            "rounds_planned": spec.get("rounds", 0) * len(spec.get("variants", [])), "rounds_done": len(runs),
            "code": sorted({f"{r['package_version']} {r['code_hash'] or '(no hash)'}" for r in runs}),
            "devices": sorted({r["device"] or "(not recorded)" for r in runs}),
            "last": max((r["finished"] for r in runs), default=None)}


def differences(runs_a: list[dict], runs_b: list[dict]) -> list[dict]:
    """Per shared variant: B minus A over the round seeds both ran, from the counts of correct test pairs."""
    out = []
    names = [n for n in dict.fromkeys(r["arch"] for r in runs_a) if any(r["arch"] == n for r in runs_b)]
    for name in names:
        a = {r["seed"]: r for r in runs_a if r["arch"] == name}
        b = {r["seed"]: r for r in runs_b if r["arch"] == name}
        seeds = sorted(set(a) & set(b))
        if not seeds:
            out.append({"variant": name, "skip": "no round seed in common"})
            continue
        diffs = [float(Fraction(*correct(b[s])) - Fraction(*correct(a[s]))) for s in seeds]
        mean, _, lo, hi = mean_ci(diffs, bounds=(-1, 1))
        out.append({"variant": name, "rounds": len(seeds), "diff": mean, "lo": lo, "hi": hi, "p": paired_t(diffs),
                    "b_won": sum(d > 0 for d in diffs), "a_won": sum(d < 0 for d in diffs),
                    "differ": what_differs([a[s] for s in seeds], [b[s] for s in seeds])})
    return out


def what_differs(runs_a: list[dict], runs_b: list[dict]) -> list[str]:
    """What sets the two sides' runs apart: the code (version and hash), the device, the config (what it trains)."""
    out = []
    for what, key in (("code", lambda r: (r["package_version"], r["code_hash"])), ("device", lambda r: r["device"]),
                      ("operators", lambda r: r.get("kernels")),
                      ("config", lambda r: str(sorted(what_it_trains(r["config"].get("config", {})).items())))):
        if {key(r) for r in runs_a} != {key(r) for r in runs_b}:
            out.append(what)
    return out
