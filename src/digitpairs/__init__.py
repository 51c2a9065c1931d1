"""digitpairs: architecture studies on pairs of MNIST digits (is the first digit <= the second?).

The public API; importing it loads no torch (the engine is imported when a name that needs it is first used):

    import digitpairs as dp
    dp.register_arch(dp.Arch("siamese_wide", "Siamese WS,AUX wide", objective="comparison+digits",
                             extra={"hidden": 256}))
    study = dp.load_study("paper", quick=True)         # a shipped study's name, or a path; named "paper-quick"
    dp.run_study(study, dp.Store("runs/digitpairs.sqlite"), data_dir=None)
    net, cfg, (mean, std) = dp.load_model("runs/digitpairs.sqlite", study.name, "siamese_ws_aux", 0)
"""

import importlib

from digitpairs.base.errors import UserError, printable
from digitpairs.base.version import __version__
from digitpairs.spec.arch import Arch
from digitpairs.spec.config import Config
from digitpairs.spec.registry import ARCHS, get_arch, register, register_arch
from digitpairs.spec.studyfile import Study, Variant, load_study

__all__ = ["ARCHS", "Arch", "Config", "Store", "Study", "UserError", "Variant", "__version__", "create_model",
           "get_arch", "load_model", "load_study", "printable", "register", "register_arch", "run_study",
           "write_report"]

_LAZY = {  # name -> the module that defines it, imported when the name is first used: torch, matplotlib, sqlite
    "Store": "digitpairs.store",
    "create_model": "digitpairs.model",
    "load_model": "digitpairs.predict.kept",
    "run_study": "digitpairs.runner.study",
    "write_report": "digitpairs.report.write",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'digitpairs' has no attribute {name!r}")
