"""digitpairs: architecture studies on pairs of MNIST digits (is the first digit <= the second?).

The public API; importing it loads no torch (the engine is imported when a name that needs it is first used):

    import digitpairs as dp
    res = dp.run("paper", "runs/digitpairs.sqlite", quick=True)  # trains what the store lacks, writes the report
    res.table()                                  # one dict per variant: mean, sd, n, n_params, ...
    res.records()                                # one dict per run: variant, round, seed, test_acc, curves, ...
    df = res.frame()                             # the same as a pandas DataFrame (pip install pandas)
    net, cfg, (mean, std) = res.load_model("siamese_ws_aux", round=0)
    dp.runs("runs/digitpairs.sqlite")            # a store's newest study, read without running (dp.frame: pandas)

run() takes a shipped study's name, a study file's path, or a Study (dp.load_study, or built from dp.Variant);
the lower-level pieces it joins are here too: dp.register_arch, dp.run_study, dp.Store, dp.write_report.
"""

import importlib

from digitpairs.base.errors import UserError, printable
from digitpairs.base.version import __version__
from digitpairs.spec.arch import Arch
from digitpairs.spec.config import Config
from digitpairs.spec.registry import ARCHS, get_arch, register, register_arch
from digitpairs.spec.studyfile import Study, Variant, load_study

__all__ = ["ARCHS", "Arch", "Config", "Results", "Store", "Study", "UserError", "Variant", "__version__",
           "create_model", "frame", "get_arch", "load_model", "load_study", "printable", "register", "register_arch",
           "run", "run_study", "runs", "write_report"]

_LAZY = {  # name -> the module that defines it, imported when the name is first used: torch, matplotlib, sqlite
    "Results": "digitpairs.api",
    "Store": "digitpairs.store",
    "create_model": "digitpairs.model",
    "frame": "digitpairs.api",
    "load_model": "digitpairs.predict.kept",
    "run": "digitpairs.api",
    "run_study": "digitpairs.runner.study",
    "runs": "digitpairs.api",
    "write_report": "digitpairs.report.write",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'digitpairs' has no attribute {name!r}")
