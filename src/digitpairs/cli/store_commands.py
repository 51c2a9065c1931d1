"""The commands that only read the store, and load no torch: `digitpairs report`, `digitpairs export mlflow` and
`digitpairs data fetch`."""

from digitpairs.data import mnist
from digitpairs.export.mlflow import export
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
        path = write_report(store, study, args.out or args.store.parent / (study or "report"))
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
