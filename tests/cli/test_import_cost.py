"""What only reads the store, and the help, load no torch (seconds before anything appears)."""

import subprocess
import sys

from digitpairs.spec.records import RunResult
from digitpairs.store import Store

CHECK = ("import sys\nfrom digitpairs.cli.main import main\ntry:\n    main({args!r})\nexcept SystemExit:\n    pass\n"
         "sys.exit(3 if {modules!r} & set(sys.modules) else 0)")


def loads_torch(*args, modules=("torch",)) -> bool:
    """Whether the command loads any of these modules."""
    code = CHECK.format(args=list(map(str, args)), modules=set(modules))
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120)
    assert p.returncode in (0, 3), p.stderr[-2000:]
    return p.returncode == 3


def test_the_help_and_the_commands_that_read_the_store_import_no_torch(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    store.ensure_study("st", {"rounds": 1, "variants": [{"name": "a", "base": "a", "sweep": {},
                                                         "arch": {"label": "A", "head": "mlp"}, "config": {}}]})
    curve = [{"epoch": 1, "train_cmp": 0.5, "train_loss": 0.5, "val_acc": None, "test_acc": 0.9}]
    store.add_runs("st", "a", {"arch": {"label": "A"}}, [RunResult(0, 0, 0.9, None, 10, 1.0, 1, curve)])
    store.close()
    assert not loads_torch("--help", modules=("torch", "scipy", "matplotlib"))  # the help appears at once
    assert not loads_torch("report", "--help")
    assert not loads_torch("report", "--store", tmp_path / "s.sqlite", "--out", tmp_path / "report")
    assert (tmp_path / "report" / "report.md").is_file()
    assert loads_torch("list")  # a command that builds networks does (the check itself works)


def test_the_public_api_imports_no_torch_until_a_name_needs_it():
    code = ("import sys, digitpairs\nassert 'torch' not in sys.modules and digitpairs.Config().epochs == 25\n"
            "digitpairs.load_study('paper')\nassert 'torch' not in sys.modules\n"
            "digitpairs.create_model('siamese_ws', digitpairs.Config())\nassert 'torch' in sys.modules\n"
            "assert sorted(digitpairs.__all__) == sorted(set(digitpairs.__all__))\n"
            "assert all(getattr(digitpairs, name) is not None for name in digitpairs.__all__)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
