"""Kept models read pairs of digit images of your own and say whether the first <= the second (the work of
`digitpairs predict`, whose command line is cli/predict.py).

The model is, by default, a variant of the newest study in the store chosen without its test pairs (choose()), all
its kept rounds together as an ensemble: the digit probabilities and the comparison probabilities are averaged over rounds (and over a round's
members and test-time views, as the study evaluated it); the answer then follows the variant's head, as in
PairNet.predict. Each round's images are prepared with that round's own normalisation (data.images.prepare).
"""

import torch

from digitpairs.analysis.choice import choose_variant
from digitpairs.base.errors import UserError
from digitpairs.data import images
from digitpairs.model import average
from digitpairs.store import weights

BATCH = 256  # pairs per forward pass: bounds memory only
COLUMNS = ("digit_first", "p_first", "digit_second", "p_second", "p_le", "first_le_second")


@torch.inference_mode()
def probabilities(net, cfg, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x (B, 2, S, S), normalised -> the comparison probability (B,) and the digit probabilities (B, 2, 10),
    averaged over the net's members and cfg.tta test-time views, as the engine's evaluation averages them."""
    p_cmp, probs = average(net, x.expand(net.k, *x.shape), net.k, cfg.tta, cfg.precision)
    return p_cmp[0], probs[0]


def choose(store, study: str | None, arch: str | None, round: int | None) -> tuple[str, str, list[int]]:
    """(study, variant, rounds) of the models to ask: by default the newest study, and of its variants with kept
    models the one its study file names (`model`), else the one with the best mean validation accuracy where every
    one has it, else its only one; and all its kept rounds. Never by test accuracy: the test figures of the variant
    chosen on them would flatter it."""
    studies = store.studies()
    if not studies:
        raise UserError(f"the store {store.path} holds no study yet: run `digitpairs reproduce` first")
    study = study or studies[-1]
    store.study_config(study)  # an unknown study: the studies there, in one line
    have = weights.kept(store, study)
    if not have:
        raise weights.no_model(store, study)
    if arch is None:
        order = [v["name"] for v in store.study_config(study).get("variants", []) if v["name"] in have]
        vals = {a: [] for a in order + [a for a in have if a not in order]}
        for r in store.runs(study):
            if r["arch"] in vals:
                vals[r["arch"]].append(r["val_acc"])
        arch, why = choose_variant(vals, store.study_config(study).get("model"))
        if arch is None:
            raise UserError(f"study {study!r} has {why}: choose one with --arch ({', '.join(have)})")
    elif arch not in have:
        raise UserError(f"no kept model of variant {arch!r} in study {study!r}: choose from {', '.join(have)}")
    if round is not None and round not in have[arch]:
        raise UserError(f"no kept model of {arch} round {round} in study {study!r}: kept rounds "
                        f"{', '.join(map(str, have[arch]))}")
    return study, arch, [round] if round is not None else have[arch]


def answer(models: list, first: list[torch.Tensor], second: list[torch.Tensor]) -> list[dict]:
    """The models' reading of the pairs (first[i], second[i]), images as images.read gives them: one dict of
    COLUMNS per pair, probabilities averaged over the models (each a (net, cfg, norm))."""
    out = []
    for s in range(0, len(first), BATCH):
        p_cmp, probs = 0, 0
        for net, cfg, norm in models:
            x = torch.stack([torch.stack([images.prepare(a, cfg, norm), images.prepare(b, cfg, norm)])
                             for a, b in zip(first[s:s + BATCH], second[s:s + BATCH])])  # (B, 2, S, S)
            pc, pr = probabilities(net, cfg, x)
            p_cmp, probs = p_cmp + pc / len(models), probs + pr / len(models)
        net = models[0][0]  # every round of a variant has the same head
        le = net.predict(p_cmp[None], probs[None])[0]
        p_le = p_cmp if net.arch.learned_head else net.p_le(probs[None])[0]
        p_digit, digit = probs.max(-1)  # (B, 2)
        for i in range(len(le)):
            out.append({"digit_first": int(digit[i, 0]), "p_first": float(p_digit[i, 0]),
                        "digit_second": int(digit[i, 1]), "p_second": float(p_digit[i, 1]),
                        "p_le": float(p_le[i]), "first_le_second": bool(le[i])})
    return out


