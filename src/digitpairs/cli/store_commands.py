"""The commands that only read the store, and load no torch: `digitpairs report`, `verify`, `studies`, `compare`,
`export mlflow` and `data fetch`."""

import json

from digitpairs.analysis.studies import differences, overview
from digitpairs.analysis.verify import scorecard
from digitpairs.base.errors import UserError
from digitpairs.data import mnist
from digitpairs.export.mlflow import export
from digitpairs.report.provenance import provenance
from digitpairs.report.scorecard import finite, to_json
from digitpairs.report.wording import p_words
from digitpairs.report.write import write_report
from digitpairs.spec.diagnosis import Diagnosis
from digitpairs.spec.names import check_name
from digitpairs.store import Store


def cmd_data(args) -> int:
    path = mnist.fetch(args.data_dir)
    print(f"MNIST verified in {path}")
    return 0


def cmd_report(args) -> int:
    store = Store(args.store, create=False)
    try:
        study = args.study or (store.studies() or [None])[-1]
        if args.out is None and study is not None:  # the default folder is named after the study
            check_name(study, "study name, as the report's folder (or pass --out),")
        path = write_report(store, study, args.out or args.store.parent / (study or "report"), diagnosis(args))
    finally:
        store.close()
    print(f"report: {path}")
    return 0


def cmd_export(args) -> int:
    store = Store(args.store, create=False)
    uri = args.tracking_uri or f"sqlite:///{args.store.resolve().parent / 'mlflow.db'}"
    try:
        added = export(store, uri, args.study)
    finally:
        store.close()
    print(f"mlflow: {added} runs added to {uri} (browse: mlflow ui --backend-store-uri {uri})")
    return 0


def diagnosis(args) -> Diagnosis:
    return Diagnosis(args.chance_margin, args.min_loss_drop)


def cmd_verify(args) -> int:
    """The study's scorecard (analysis/verify.py), in lines or as JSON; exit 0 where it holds, 1 where not."""
    store = Store(args.store, create=False)
    try:
        studies = store.studies()
        if not studies:
            raise UserError(f"the store {store.path} holds no study yet: run `digitpairs reproduce` first")
        study = args.study or studies[-1]
        spec = store.study_config(study)
        with store.reading():
            runs = store.runs(study)
            if not runs:
                raise UserError(f"study {study!r} in {store.path} has no finished run yet: run it first")
            card = scorecard(spec, runs, store.curves(study), store.answers(study), diagnosis(args))
    finally:
        store.close()
    if args.json:
        print(to_json(study, card, provenance(runs)), end="")
    else:
        for v in card["variants"]:
            print(f"{v['label']}: {v['verdict']}: {v['reason']}")
        for c in card["claims"]:
            print(f"claim \"{c['text']}\": {c['verdict']}" + (f" ({c['why']})" if c["why"] else ""))
        for f in card["failed"]:
            print(f"failed round: {f['variant']} round {f['round']}: {f['why']}")
        print(f"study {study!r}: " + ("holds" if card["holds"] else "does not hold") +
              " (no claim contradicted and no variant below the report's figure)" * card["holds"])
    return 0 if card["holds"] else 1


def cmd_studies(args) -> int:
    """Every study of the store, one line each (or JSON)."""
    store = Store(args.store, create=False)
    try:
        with store.reading():
            found = [overview(s, store.study_config(s), store.runs(s)) for s in store.studies()]
    finally:
        store.close()
    if args.json:
        print(json.dumps(found, indent=1))
        return 0
    for s in found:
        print(f"{s['study']}: {len(s['variants'])} variants ({', '.join(s['variants'])}), {s['rounds_done']}/"
              f"{s['rounds_planned']} runs; code {'; '.join(s['code']) or '-'}; on {'; '.join(s['devices']) or '-'}; "
              f"last run {s['last'] or '-'}")
    if not found:
        print(f"no study in {args.store}")
    return 0


def cmd_compare(args) -> int:
    """Two studies, paired by variant and round seed: B minus A."""
    runs = []
    for path, study in ((args.store, args.study_a), (args.store_b or args.store, args.study_b)):
        store = Store(path, create=False)
        try:
            store.study_config(study)  # an unknown study: the studies there, in one line
            runs.append(store.runs(study))
        finally:
            store.close()
    found = differences(*runs)
    if args.json:
        print(json.dumps(finite({"a": args.study_a, "b": args.study_b, "variants": found}), indent=1))
        return 0
    if not found:
        print(f"{args.study_a} and {args.study_b} share no variant")
    for d in found:
        if "skip" in d:
            print(f"{d['variant']}: {d['skip']}")
            continue
        differ = f"; they differ in {', '.join(d['differ'])}" if d["differ"] else "; same code, device and config"
        print(f"{d['variant']}: {args.study_b} - {args.study_a} = {100 * d['diff']:+.2f} points (95% CI "
              f"{100 * d['lo']:+.2f} to {100 * d['hi']:+.2f}), paired t p {p_words(d['p'])}, won {d['b_won']} of "
              f"{d['rounds']} rounds ({d['a_won']} lost){differ}")
    return 0
