"""The commands that only read the store, and load no torch: `digitpairs report`, `verify`, `export mlflow` and
`data fetch`."""


from digitpairs.analysis.diagnose import Diagnosis
from digitpairs.analysis.verify import scorecard
from digitpairs.base.errors import UserError
from digitpairs.data import mnist
from digitpairs.export.mlflow import export
from digitpairs.report.provenance import provenance
from digitpairs.report.scorecard import to_json
from digitpairs.report.write import write_report
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
