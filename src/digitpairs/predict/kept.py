"""Loading a kept model back (the weights of a stored run, store/weights.py), with the normalisation its images had
(pixel values 0..255, pooled 2x2 first for a size-14 study):

    from digitpairs import load_model
    net, cfg, (mean, std) = load_model("runs/digitpairs.sqlite", "paper", "ws_bn_aug_bayes", 0)
    x = (pairs - mean) / std                        # pairs: (B, 2, S, S), S = cfg.size
    cmp, digits = net(x.expand(net.k, *x.shape))    # (K, B) comparison logits, (K, B, 2, 10) digit logits
    # K = cfg.members: an ensemble round predicts from its members' averaged probabilities (model.average)
"""

import dataclasses
import json
import pickle
import zipfile
from contextlib import contextmanager
from pathlib import Path

import torch

from digitpairs.base.errors import UserError, first_line
from digitpairs.model import PairNet
from digitpairs.model.weights import from_bytes
from digitpairs.spec import plugins
from digitpairs.spec.arch import Arch, current_arch
from digitpairs.spec.config import Config
from digitpairs.store import Store, weights


def rebuild(config: dict) -> tuple[Arch, Config]:
    """The Arch and Config of a stored run's config JSON ({"config": ..., "arch": ..., "sweep": ...}); JSON gives
    lists where the dataclasses hold tuples, and fields unknown to this version are left out."""
    cfg_fields = {f.name for f in dataclasses.fields(Config)}
    cfg = {k: v for k, v in config["config"].items() if k in cfg_fields}
    cfg["channels"] = tuple(cfg.get("channels", Config().channels))
    arch_fields = {f.name for f in dataclasses.fields(Arch)}
    arch = {k: v for k, v in current_arch(config["arch"]).items() if k in arch_fields}  # an old `aux`: objective
    arch["report"] = tuple(arch["report"]) if arch.get("report") else None
    arch["extra"] = {}  # the stored Config is resolved already: the architecture's own settings are in it
    arch = Arch(**arch)  # a network of yours by its reference: found again in its plugin (spec/plugins.py)
    for part in arch.own_parts:
        arch.factory(part)
    return arch, Config().replace(**cfg)


def build(arch: Arch, cfg: Config, state: dict[str, torch.Tensor]) -> PairNet:
    """A PairNet of cfg.members members in eval mode with these weights."""
    net = PairNet(arch, cfg, k=cfg.members)
    try:
        net.load_state_dict(state)
    except RuntimeError as e:  # torch's first line only says that loading failed; its second says why
        why = str(e).splitlines()[1:] or [str(e)]
        raise UserError(f"the kept weights do not fit {arch.name} ({first_line(why[0])}): the store "
                        "was written by another version of the model; train it again") from None
    return net.eval()


@contextmanager
def opened(store):
    """A Store given, or one opened read-only from a path (and closed after)."""
    if isinstance(store, str | Path):
        s = Store(Path(store), create=False)
        try:
            yield s
        finally:
            s.close()
    else:
        yield store


def load_model(store, study: str, arch: str, round: int) -> tuple[PairNet, Config, tuple[float, float]]:
    """The model of one stored run: (PairNet in eval mode with its trained weights, its resolved Config, the
    (mean, SD) its images were normalised with). store: a Store or the path of one; arch: the variant's name as
    stored (a registered name, or name[overrides]). See the module's docstring for an example."""
    with opened(store) as s:
        plugins.load_all(s.study_config(study).get("plugins", []))  # an unknown study: the studies there, in one line
        if not weights.has_table(s.db):
            raise weights.no_model(s, study)
        row = weights.stored(s.db, study, arch, round)
        if row is None:
            have = weights.kept(s, study)
            if not have:
                raise weights.no_model(s, study)
            if arch not in have:
                raise UserError(f"no kept model of variant {arch!r} in study {study!r}: choose from "
                                f"{', '.join(have)}")
            raise UserError(f"no kept model of {arch} round {round} in study {study!r}: kept rounds "
                            f"{', '.join(map(str, have[arch]))}")
        config, blob, mean, std = row
        try:
            state = from_bytes(blob)
        except (RuntimeError, pickle.UnpicklingError, EOFError, zipfile.BadZipFile, ValueError) as e:
            raise UserError(f"the kept model of {arch} round {round} in {s.path} cannot be read "
                            f"({type(e).__name__}): the store is damaged; train it again") from None
    a, cfg = rebuild(json.loads(config))
    return build(a, cfg, state), cfg, (mean, std)


