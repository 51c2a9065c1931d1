"""`digitpairs predict`: a kept model reads two digit images of your own and says whether the first <= the second.

    digitpairs predict a.png b.jpg                        # the digit read in each, P(first <= second), the answer
    digitpairs predict --pairs pairs.csv [--out out.csv]  # columns first,second (paths relative to the CSV)

Which model, and how it answers: predict/answer.py.
"""

import csv
import io
import sys
from pathlib import Path

from digitpairs.base.errors import UserError, reason
from digitpairs.base.files import atomic_write
from digitpairs.data import images
from digitpairs.predict.answer import COLUMNS, answer, choose
from digitpairs.predict.kept import load_model
from digitpairs.store import Store
from digitpairs.store import files as store_files


def read_pairs(path: Path) -> tuple[list[dict], list[str], list[Path], list[Path]]:
    """The CSV's rows and columns, and the two images' paths of each row (relative paths: to the CSV's folder)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            rows, fields = list(reader), list(reader.fieldnames or [])
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise UserError(f"cannot read the pairs file {path} ({reason(e)}): give a CSV "
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


def load_images(paths: list[Path]) -> list:
    """images.read of every path, each file read once."""
    seen: dict[Path, object] = {}
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
        raise UserError(f"cannot write {str(out)!r} ({reason(e)}): pass --out with a "
                        "writable path") from None
    for what, paths in inputs.items():
        if any(target == _resolved(p) for p in paths):
            raise UserError(f"--out {str(out)!r} is {what}: name another file")


def _resolved(path: Path) -> Path | None:
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # an input that cannot be resolved is not --out; reading it says why
        return None


def describe(study: str, arch: str, rounds: list[int]) -> str:
    many = f"rounds {', '.join(map(str, rounds))} (an ensemble of {len(rounds)})" if len(rounds) > 1 else \
        f"round {rounds[0]}"
    return f"model: study {study}, variant {arch}, {many}"


def cmd_predict(args) -> int:
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
        models = [load_model(store, study, arch, r) for r in rounds]
    finally:
        store.close()
    answers = answer(models, a, b)
    if args.pairs is None:
        return show(describe(study, arch, rounds), first[0], second[0], answers[0])
    text = to_csv(rows, fields, answers)
    if args.out is None:
        sys.stdout.write(text)
    else:
        try:
            atomic_write(args.out, text)
        except OSError as e:
            raise UserError(f"cannot write {args.out} ({reason(e)}): pass --out with a writable path") from None
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
