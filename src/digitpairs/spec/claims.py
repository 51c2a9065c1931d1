"""A study file's [[claims]]: what the report checks on the study's rounds (analysis/claims.py judges them), parsed
and checked here, before any training:

    [[claims]]
    better = "transfer"                                      # this variant is more accurate than `worse`
    worse = "siamese_ws"
    text = "TransferLearn beats Siamese WS."
    [[claims]]
    same = ["siamese_ws_aux_bn", "siamese_ws_aux_bn_drop"]   # the two are equally accurate, within the margin
    margin = 1                                               # in points of accuracy (default 1)
    text = "Dropout on top of BatchNorm changes nothing significant."
"""

from digitpairs.base.errors import UserError

MARGIN = 1.0  # a `same` claim's default margin of equivalence, in points of accuracy
KEYS = {"text", "better", "worse", "same", "margin"}


def parse(claims, where: str, known: set[str]) -> list[dict]:
    """The [[claims]] of a study file, checked: each {text, better, worse} or {text, same: [a, b]}, naming variants
    in `known` (the study's, and the registered architectures: a study run with fewer variants keeps the claims
    on the others, unchecked)."""
    if not isinstance(claims, list) or not all(isinstance(c, dict) for c in claims):
        raise UserError(f"{where}: claims must be an array of tables ([[claims]]), not {claims!r}")
    out = []
    for i, claim in enumerate(claims):
        here = f"{where} claims[{i}]"
        unknown = sorted(set(claim) - KEYS)
        if unknown:
            raise UserError(f"{here}: unknown key {unknown[0]!r} (known: {', '.join(sorted(KEYS))})")
        text = claim.get("text")
        if not isinstance(text, str) or not text.isprintable() or not 0 < len(text) <= 300:
            raise UserError(f"{here}: text must be one printable line of 1-300 characters, not {text!r}")
        if "same" in claim and not {"better", "worse"} & set(claim):
            names, kind = claim["same"], "same"
            if not isinstance(names, list) or len(names) != 2:
                raise UserError(f"{here}: same must be a list of two variant names, not {names!r}")
        elif {"better", "worse"} <= set(claim) and "same" not in claim:
            names, kind = [claim["better"], claim["worse"]], "better"
        else:
            raise UserError(f"{here}: a claim has better and worse, or same (a list of two), beside its text")
        for name in names:
            if not isinstance(name, str) or name not in known:
                raise UserError(f"{here}: {name!r} is no variant of this study nor a registered architecture")
        if names[0] == names[1]:
            raise UserError(f"{here}: a claim compares two different variants, not {names[0]!r} with itself")
        margin = claim.get("margin")  # stored only where given: the specs of studies without one stay as they were
        if margin is not None and (kind != "same" or isinstance(margin, bool) or not isinstance(margin, (int, float))
                                   or not 0 < margin <= 100):
            raise UserError(f"{here}: margin belongs to a same claim and is a number of points in (0, 100], "
                            f"not {margin!r}")
        out.append(({"text": text, kind: names} | ({} if margin is None else {"margin": margin})) if kind == "same"
                   else {"text": text, "better": names[0], "worse": names[1]})
    return out
