"""Failed rounds: a round whose test accuracy is near chance, whose training loss never fell, or that produced NaN.
Each is flagged, never dropped: its variant's statistics stand as they are, and beside them, as a sensitivity line,
the statistics without the flagged rounds and the claims whose verdict the flags change.

The rule, with its thresholds (spec/diagnosis.py; `digitpairs report` and `verify` take them as flags):
- near chance: test accuracy at most `chance_margin` above the accuracy of always giving the commoner answer on the
  round's test pairs (about 0.55: equal digits count as "first <= second");
- loss never fell: the training objective of the last epoch above (1 - `min_loss_drop`) times the first epoch's;
- NaN: a NaN test accuracy or training loss in any epoch.
"""

import math

from digitpairs.analysis.claims import judge
from digitpairs.analysis.compare import compare, summarise
from digitpairs.spec.diagnosis import DEFAULT, Diagnosis

COMMONER = 0.55  # P(first <= second) over random pairs of digits: the commoner answer's share, where not stored


def flagged(runs: list[dict], curves: list[dict], found: dict, setting: Diagnosis = DEFAULT
            ) -> dict[tuple[str, int], str]:
    """{(variant, round): why} of the failed rounds. found: the runs' answers (store.answers), for each round's
    commoner answer; curves: the store's per-epoch curves."""
    by_run: dict[tuple[str, int], list[dict]] = {}
    for c in curves:
        by_run.setdefault((c["arch"], c["round"]), []).append(c)
    out = {}
    for run in runs:
        key = (run["arch"], run["round"])
        epochs = sorted(by_run.get(key, []), key=lambda c: c["epoch"])
        losses = [c["train_loss"] for c in epochs]
        answers = found.get(run["arch"], {}).get(run["round"])
        commoner = COMMONER
        if answers is not None:
            share = float((answers["classes"][:, 0] <= answers["classes"][:, 1]).mean())
            commoner = max(share, 1 - share)
        if math.isnan(run["test_acc"]) or any(v is None or math.isnan(v) for v in losses):
            out[key] = "produced NaN"
        elif run["test_acc"] <= commoner + setting.chance_margin:
            out[key] = (f"test accuracy {run['test_acc']:.4f}, near chance (always the commoner answer: "
                        f"{commoner:.4f})")
        elif len(losses) > 1 and losses[-1] > (1 - setting.min_loss_drop) * losses[0]:
            out[key] = f"training loss never fell ({losses[0]:.4f} at epoch 1, {losses[-1]:.4f} at the last)"
    return out


def sensitivity(spec: dict, runs: list[dict], failed: dict, claims: list[dict]) -> dict:
    """The study without its flagged rounds: each affected variant's statistics, and every claim whose verdict
    changes (paired over the rounds that neither variant of the claim has flagged)."""
    if not failed:
        return {"rows": [], "changed": []}
    kept = [r for r in runs if (r["arch"], r["round"]) not in failed]
    affected = {arch for arch, _ in failed}
    rows = [r for r in summarise(spec, kept) if r["arch"] in affected]
    full_rows = summarise(spec, runs)
    before = judge(claims, full_rows, compare(full_rows, spec["rounds"]))
    after = judge(claims, full_rows, compare(full_rows, spec["rounds"], left_out=frozenset(failed)))
    changed = [{"text": b["text"], "before": b["verdict"], "after": a["verdict"]} for b, a in zip(before, after)
               if b["verdict"] != a["verdict"]]
    return {"rows": rows, "changed": changed}
