"""Every trained model kept: the final weights of each run in the store's `models` table, and loading them back.

A run's weights are the state dict of the PairNet it trained (k = its Config's `members`), serialised with
torch.save and read back with torch.load(weights_only=True): tensors only, no code is unpickled. They are written
in the transaction that inserts the run (Store.add_runs calls `save`), so a run and its model are stored together
or not at all. A store written before models were kept has no such table: it reads as before, and asking it for a
model says so in one line.

Loading a run's model back, with the normalisation its images had (pixel values 0..255, pooled 2x2 first for a
size-14 study):

    from digitpairs.keep import load_model
    net, cfg, (mean, std) = load_model("runs/digitpairs.sqlite", "paper", "ws_bn_aug_bayes", 0)
    x = (pairs - mean) / std                        # pairs: (B, 2, S, S), S = cfg.size
    cmp, digits = net(x.expand(net.k, *x.shape))    # (K, B) comparison logits, (K, B, 2, 10) digit logits
    # K = cfg.members: an ensemble round predicts from its members' averaged probabilities (predict.probabilities)
"""

import dataclasses
import io
import json
import pickle
import sqlite3
import tempfile
import zipfile
from contextlib import contextmanager
from pathlib import Path

import torch

from digitpairs import UserError
from digitpairs.config import Arch, Config, current_arch
from digitpairs.models import PairNet

TABLE = """CREATE TABLE IF NOT EXISTS models (
    study TEXT NOT NULL, arch TEXT NOT NULL, round INTEGER NOT NULL,
    weights BLOB NOT NULL,           -- torch.save of the PairNet's state dict (k = members), read with weights_only
    norm_mean REAL NOT NULL,         -- the training pairs' mean and SD the images were normalised with
    norm_std REAL NOT NULL,
    PRIMARY KEY (study, arch, round),
    FOREIGN KEY (study, arch, round) REFERENCES runs(study, arch, round)
)"""


def to_bytes(state: dict[str, torch.Tensor]) -> bytes:
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def from_bytes(blob: bytes) -> dict[str, torch.Tensor]:
    """The state dict; tensors only (weights_only: a blob that holds code is refused, not run)."""
    return torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)


def save(db: sqlite3.Connection, study: str, arch: str, results) -> int:
    """Insert the weights of the runs (train.RunResult) that carry them, in the caller's open transaction; a model
    already stored is kept as it is, and runs without weights (state None: --no-keep-models) are skipped. Returns
    the number of models inserted."""
    db.execute(TABLE)  # also without weights: the store then says the study ran without keeping its models
    rows = [(study, arch, r.round, to_bytes(r.state), r.norm[0], r.norm[1]) for r in results if r.state is not None]
    before = db.total_changes
    db.executemany("INSERT OR IGNORE INTO models VALUES (?, ?, ?, ?, ?, ?)", rows)
    return db.total_changes - before


def has_table(db: sqlite3.Connection) -> bool:
    return db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'models'").fetchone() is not None


def kept(store, study: str) -> dict[str, list[int]]:
    """The variants of the study with kept models, each with its kept rounds (empty in a store without models)."""
    if not has_table(store.db):
        return {}
    out: dict[str, list[int]] = {}
    for arch, r in store.db.execute("SELECT arch, round FROM models WHERE study = ? ORDER BY arch, round", (study,)):
        out.setdefault(arch, []).append(r)
    return out


def no_model(store, study: str) -> UserError:
    if not has_table(store.db):
        return UserError(f"no kept model in {store.path}: it was written before models were kept; run a study with "
                         "this version (models are kept unless --no-keep-models)")
    return UserError(f"no kept model of study {study!r} in {store.path} (it ran with --no-keep-models): run it "
                     "again into a new --store to keep its models")


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
    return Arch(**arch), Config().replace(**cfg)


def build(arch: Arch, cfg: Config, state: dict[str, torch.Tensor]) -> PairNet:
    """A PairNet of cfg.members members in eval mode with these weights."""
    net = PairNet(arch, cfg, k=cfg.members)
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else str(e)
        raise UserError(f"the kept weights do not fit {arch.name} ({first}): the store was written by another "
                        "version of the model; train it again") from None
    return net.eval()


def stored(db: sqlite3.Connection, study: str, arch: str, round: int) -> tuple | None:
    """(run config JSON, weights blob, norm mean, norm SD) of a kept model, or None."""
    return db.execute("SELECT r.config, m.weights, m.norm_mean, m.norm_std FROM models m JOIN runs r "
                      "USING (study, arch, round) WHERE study = ? AND arch = ? AND round = ?",
                      (study, arch, round)).fetchone()


@contextmanager
def opened(store):
    """A Store given, or one opened read-only from a path (and closed after)."""
    from digitpairs.store import Store  # store imports train, which does not import this module

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
        s.study_config(study)  # an unknown study: the studies there, in one line
        if not has_table(s.db):
            raise no_model(s, study)
        row = stored(s.db, study, arch, round)
        if row is None:
            have = kept(s, study)
            if not have:
                raise no_model(s, study)
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


def attach(client, run_id: str, store, study: str, arch: str, round: int) -> bool:
    """Log a run's kept model to its MLflow run as artifacts model/weights.pt (the state dict, for
    torch.load(weights_only=True)) and model/model.json (its Config, Arch and normalisation). False: none kept."""
    if not has_table(store.db):
        return False
    row = stored(store.db, study, arch, round)
    if row is None:
        return False
    config, blob, mean, std = row
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "weights.pt").write_bytes(blob)
        meta = json.loads(config) | {"norm": {"mean": mean, "std": std}, "study": study, "variant": arch,
                                      "round": round}
        (Path(tmp) / "model.json").write_text(json.dumps(meta, indent=1, sort_keys=True))
        client.log_artifacts(run_id, tmp, "model")
    return True
