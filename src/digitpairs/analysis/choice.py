"""Which variant stands for a study: `digitpairs predict` answers with it and the report looks at it first. One
rule for both, and never the test set: the test figures of a variant chosen on them would flatter it."""

import statistics


def choose_variant(vals: dict[str, list[float | None]], named: str | None) -> tuple[str | None, str]:
    """(variant, why it was chosen) among the candidates, given as {variant: the validation accuracies of its runs}
    in the study's order: the one the study file names (`model`) where it is a candidate; else the highest mean
    validation accuracy where every run of every candidate has one (the first of equals); else the only candidate;
    else (None, why none could be chosen)."""
    if named in vals:
        return named, "the model the study file names"
    if vals and all(vs and all(v is not None for v in vs) for vs in vals.values()):
        best = max(vals, key=lambda a: statistics.fmean(vals[a]))
        return best, "the best variant here by mean validation accuracy"
    if len(vals) == 1:
        return next(iter(vals)), "the study's only variant"
    why = f"its `model`, {named}, has none here" if named else "its study file names no `model`"
    return None, f"no validation split to choose a variant by ({why})"
