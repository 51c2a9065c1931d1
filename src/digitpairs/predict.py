"""`digitpairs predict`: a kept model reads two digit images of your own and says whether the first <= the second.

    digitpairs predict a.png b.jpg                        # the digit read in each, P(first <= second), the answer
    digitpairs predict --pairs pairs.csv [--out out.csv]  # columns first,second (paths relative to the CSV)

The model is, by default, a variant of the newest study in the store chosen without its test pairs (choose()), all
its kept rounds together as an ensemble: the digit probabilities and the comparison probabilities are averaged over rounds (and over a round's
members and test-time views, as the study evaluated it); the answer then follows the variant's head, as in
PairNet.predict. Each round's images are prepared with that round's own normalisation (images.prepare).
"""

import csv
import io
import os
import statistics
import sys
import tempfile
from pathlib import Path

import torch

from digitpairs import UserError, images, keep
from digitpairs.models import PairNet
from digitpairs.pairs import view
from digitpairs.steps import autocast

BATCH = 256  # pairs per forward pass: bounds memory only
COLUMNS = ("digit_first", "p_first", "digit_second", "p_second", "p_le", "first_le_second")


@torch.inference_mode()
def probabilities(net: PairNet, cfg, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x (B, 2, S, S), normalised -> the comparison probability (B,) and the digit probabilities (B, 2, 10),
    averaged over the net's members and cfg.tta test-time views, as train.evaluate averages them."""
    p_cmp, probs = 0, 0
    xs = x.expand(net.k, *x.shape)  # (K, B, 2, S, S): every member reads the same pairs
    for i in range(cfg.tta):
        with autocast(cfg.precision, x.device):
            cmp, digits = net(view(xs, i))
        p_cmp = p_cmp + torch.sigmoid(cmp.float()).mean(0)
        probs = probs + digits.float().softmax(-1).mean(0)
    return p_cmp / cfg.tta, probs / cfg.tta


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
    have = keep.kept(store, study)
    if not have:
        raise keep.no_model(store, study)
    if arch is None:
        runs = [r for r in store.runs(study) if r["arch"] in have]
        named = store.study_config(study).get("model")
        if named in have:
            arch = named
        elif all(r["val_acc"] is not None for r in runs):
            arch = max(have, key=lambda a: statistics.fmean(r["val_acc"] for r in runs if r["arch"] == a))
        elif len(have) == 1:
            arch = next(iter(have))
        else:
            why = f"its `model`, {named}, has no kept model here" if named else "its study file names no `model`"
            raise UserError(f"study {study!r} has no validation split to choose a variant by ({why}): choose one "
                            f"with --arch ({', '.join(have)})")
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
        p_le = p_cmp if net.arch.head == "mlp" else net.p_le(probs[None])[0]
        p_digit, digit = probs.max(-1)  # (B, 2)
        for i in range(len(le)):
            out.append({"digit_first": int(digit[i, 0]), "p_first": float(p_digit[i, 0]),
                        "digit_second": int(digit[i, 1]), "p_second": float(p_digit[i, 1]),
                        "p_le": float(p_le[i]), "first_le_second": bool(le[i])})
    return out


def read_pairs(path: Path) -> tuple[list[dict], list[str], list[Path], list[Path]]:
    """The CSV's rows and columns, and the two images' paths of each row (relative paths: to the CSV's folder)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            rows, fields = list(reader), list(reader.fieldnames or [])
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise UserError(f"cannot read the pairs file {path} ({getattr(e, 'strerror', None) or e}): give a CSV "
                        "file with columns first,second") from None
    missing = [c for c in ("first", "second") if c not in fields]
    if missing:
        raise UserError(f"{path} has no column {' or '.join(missing)}: its first line must name the columns "
                        "first,second (image paths relative to the file)")
    if not rows:
        raise UserError(f"{path} lists no pair: add rows of two image paths under its header first,second")
    if len(set(fields)) != len(fields) or any(None in row for row in rows):
        raise UserError(f"{path}: a column name repeats, or a row has more cells than the header: give each row "
                        "as many cells as the header names, each name once")
    clash = [c for c in COLUMNS if c in fields]
    if clash:
        raise UserError(f"{path} already has the column {clash[0]}, which predict adds: remove it")
    paths = {"first": [], "second": []}
    for n, row in enumerate(rows, start=1):
        for col, listed in paths.items():
            if not (row.get(col) or "").strip():
                raise UserError(f"{path} row {n}: the {col} image is empty: give a path in every row")
            listed.append(path.parent / row[col].strip())
    return rows, fields, paths["first"], paths["second"]


def load_images(paths: list[Path]) -> list[torch.Tensor]:
    """images.read of every path, each file read once."""
    seen: dict[Path, torch.Tensor] = {}
    return [seen[p] if p in seen else seen.setdefault(p, images.read(p)) for p in paths]


def to_csv(rows: list[dict], fields: list[str], answers: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, [*fields, *COLUMNS], lineterminator="\n")
    writer.writeheader()
    for row, a in zip(rows, answers):
        writer.writerow(row | {k: f"{v:.4f}" if isinstance(v, float) else str(v).lower() if isinstance(v, bool)
                               else v for k, v in a.items()})
    return buf.getvalue()


def check_out(out: Path, inputs: dict[str, list[Path]]) -> None:
    """--out replaces a plain file only, and none that this command reads or that holds results."""
    try:
        if out.is_symlink() or (out.exists() and not out.is_file()):
            raise UserError(f"--out {str(out)!r} exists and is not a plain file: name a new file or a plain one")
        target = out.resolve()
    except (OSError, RuntimeError) as e:  # a folder it may not look into; a loop of links (resolve)
        raise UserError(f"cannot write {str(out)!r} ({getattr(e, 'strerror', None) or e}): pass --out with a "
                        "writable path") from None
    for what, paths in inputs.items():
        if any(target == _resolved(p) for p in paths):
            raise UserError(f"--out {str(out)!r} is {what}: name another file")


def _resolved(path: Path) -> Path | None:
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # an input that cannot be resolved is not --out; reading it says why
        return None


def write_atomic(path: Path, text: str) -> None:
    """Write through a temporary file in the same folder, then rename: a failure leaves any old file whole."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", newline="") as f:
                f.write(text)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError as e:
        raise UserError(f"cannot write {path} ({e.strerror or e}): pass --out with a writable path") from None


def describe(study: str, arch: str, rounds: list[int]) -> str:
    many = f"rounds {', '.join(map(str, rounds))} (an ensemble of {len(rounds)})" if len(rounds) > 1 else \
        f"round {rounds[0]}"
    return f"model: study {study}, variant {arch}, {many}"


def add_parser(subparsers, store_default: Path, path_type=Path):
    """The `predict` subcommand on the CLI's subparsers; returns its parser."""
    p = subparsers.add_parser("predict", help="read two digit images (or a CSV of pairs) with a kept model")
    p.add_argument("images", nargs="*", type=path_type, metavar="IMAGE",
                   help="the first and the second image (PNG or JPEG, any size, dark on light or light on dark)")
    p.add_argument("--pairs", type=path_type, default=None, metavar="FILE.csv",
                   help="a CSV with columns first,second (image paths relative to it) instead of two images")
    p.add_argument("--out", type=path_type, default=None,
                   help="with --pairs: write the CSV with the answers here (default: standard output)")
    p.add_argument("--store", type=path_type, default=store_default,
                   help=f"SQLite results store (default: {store_default})")
    p.add_argument("--study", default=None, help="study name (default: the newest in the store)")
    p.add_argument("--arch", default=None,
                   help="variant, as named in the study's table (default: the best one with kept models)")
    p.add_argument("--round", type=int, default=None,
                   help="one round's model (default: every kept round of the variant, as an ensemble)")
    return p


def cmd_predict(args) -> int:
    from digitpairs.store import Store
    from digitpairs.store import files as store_files

    if args.pairs is not None and args.images:
        raise UserError("give two images or --pairs FILE.csv, not both")
    if args.pairs is None and len(args.images) != 2:
        raise UserError(f"give two images (digitpairs predict A.png B.png) or --pairs FILE.csv, not "
                        f"{len(args.images)} image{'s' * (len(args.images) != 1)}")
    if args.out is not None and args.pairs is None:
        raise UserError("--out writes the answers of --pairs: with two images they are printed")
    if args.pairs is not None:
        rows, fields, first, second = read_pairs(args.pairs)
    else:
        rows, fields, first, second = [], [], [args.images[0]], [args.images[1]]
    if args.out is not None:
        check_out(args.out, {"the pairs file": [args.pairs], "one of its images": first + second,
                             "the store": store_files(args.store)})
    read = load_images(first + second)  # before the store: a bad image fails fast
    a, b = read[:len(first)], read[len(first):]
    store = Store(args.store, create=False)
    try:
        study, arch, rounds = choose(store, args.study, args.arch, args.round)
        models = [keep.load_model(store, study, arch, r) for r in rounds]
    finally:
        store.close()
    answers = answer(models, a, b)
    if args.pairs is None:
        return show(describe(study, arch, rounds), first[0], second[0], answers[0])
    text = to_csv(rows, fields, answers)
    if args.out is None:
        sys.stdout.write(text)
    else:
        write_atomic(args.out, text)
    where = "" if args.out is None else f"; answers: {args.out}"
    print(describe(study, arch, rounds) + where, file=sys.stderr)  # standard output is the CSV alone
    return 0


def show(model: str, first: Path, second: Path, a: dict) -> int:
    print(model)
    print(f"first:  {first} reads {a['digit_first']} (p {a['p_first']:.3f})")
    print(f"second: {second} reads {a['digit_second']} (p {a['p_second']:.3f})")
    print(f"P(first <= second) = {a['p_le']:.3f}")
    print(f"answer: first {'<=' if a['first_le_second'] else '>'} second")
    return 0
