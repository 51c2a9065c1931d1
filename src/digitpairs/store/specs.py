"""A study's stored spec against the one a command asks for: where they differ, and what may change between runs of
one study (it may grow; what it already ran may not change)."""

import json

from digitpairs.spec.arch import Arch, current_arch
from digitpairs.spec.config import Config, what_it_trains


def differences(old, new, path: str = "") -> list[str]:
    """Where two JSON values differ: ["variants.siamese_ws.config.epochs 25 -> 5", ...]."""
    if isinstance(old, list) and isinstance(new, list) and all(isinstance(x, dict) and "name" in x for x in old + new):
        old, new = {x["name"]: x for x in old}, {x["name"]: x for x in new}  # variants, by name
    if isinstance(old, dict) and isinstance(new, dict):
        return [d for k in sorted(set(old) | set(new), key=str)
                for d in differences(old.get(k), new.get(k), f"{path}{k}.")]
    return [] if old == new else [f"{path.rstrip('.')} {old} -> {new}"]


def identity(variant: dict) -> dict:
    """A variant's spec without what may change between runs of one study: its group size (kept as stored) and
    its run options (config.RUN_OPTIONS: a study may be resumed on another device, with or without CUDA graphs)."""
    out = {k: v for k, v in variant.items() if k != "group_rounds"}
    if isinstance(out.get("config"), dict):
        out["config"] = what_it_trains(out["config"])
    return out


def growth_differences(old: dict, new: dict) -> list[str]:
    """Where a new study spec differs from the stored one, growth aside: more rounds, more variants, and Config or
    Arch fields newer than the stored spec (filled in with their defaults, which reproduce the old behaviour)."""
    defaults = {"config": json.loads(json.dumps(Config().to_dict())),
                "arch": json.loads(json.dumps(Arch("", "").to_dict()))}

    def filled(v: dict) -> dict:
        v = v | {"arch": current_arch(v["arch"])} if isinstance(v.get("arch"), dict) else v  # aux -> objective
        return identity(v | {key: d | v[key] for key, d in defaults.items() if isinstance(v.get(key), dict)})

    new_variants = {v["name"]: v for v in new.get("variants", [])}
    grows = ("rounds", "variants", "claims", "model", "plugins")  # the report's and predict's, not what it trained
    diffs = differences({k: x for k, x in old.items() if k not in grows}, {k: x for k, x in new.items() if k not in grows})
    for v in old.get("variants", []):
        if v["name"] not in new_variants:
            diffs.append(f"variant {v['name']} is missing")
        else:
            diffs += differences(filled(v), filled(new_variants[v["name"]]), f"variants.{v['name']}.")
    return diffs


def merged(old: dict, new: dict) -> dict:
    """The new spec with each stored variant's group size kept (a study's grouping never changes)."""
    stored = {v["name"]: v.get("group_rounds") for v in old.get("variants", [])}
    return new | {"variants": [v | ({"group_rounds": stored[v["name"]]} if stored.get(v["name"]) else {})
                               for v in new.get("variants", [])]}
