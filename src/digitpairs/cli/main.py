"""main(): the `digitpairs` command. It parses the flags (cli/parser.py), loads the plugins, runs one command's
function and turns what ends it into an exit code and at most one line: 2 for what the user can fix, 130 and 143
for Ctrl-C and SIGTERM. Each command's module is imported only when that command runs, so `--help` and the
commands that only read the store load no torch."""

import errno
import importlib
import importlib.util
import os
import signal
import sqlite3
import sys
import threading
from pathlib import Path

from digitpairs.base.errors import UserError, printable
from digitpairs.cli.parser import build_parser

COMMANDS = {  # command -> (module, function)
    "data": ("digitpairs.cli.store_commands", "cmd_data"),
    "report": ("digitpairs.cli.store_commands", "cmd_report"),
    "verify": ("digitpairs.cli.store_commands", "cmd_verify"),
    "studies": ("digitpairs.cli.store_commands", "cmd_studies"),
    "compare": ("digitpairs.cli.store_commands", "cmd_compare"),
    "export": ("digitpairs.cli.store_commands", "cmd_export"),
    "list": ("digitpairs.cli.engine_commands", "cmd_list"),
    "bench": ("digitpairs.cli.engine_commands", "cmd_bench"),
    "run": ("digitpairs.cli.run", "cmd_run"),
    "reproduce": ("digitpairs.cli.run", "cmd_reproduce"),
    "predict": ("digitpairs.cli.predict", "cmd_predict"),
    "--version": ("digitpairs.cli.engine_commands", "cmd_version"),
}


def load_plugin(name: str) -> None:
    """Import a user's module (dotted name, or a path to a .py file) so that its architectures register."""
    try:
        if name.endswith(".py"):
            spec = importlib.util.spec_from_file_location(Path(name).stem, name)
            if spec is None or not Path(name).is_file():
                raise ImportError(f"no file {name}")
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        else:
            importlib.import_module(name)
    except Exception as e:  # noqa: BLE001 - any failure in the user's module is reported in one line
        moved = MOVED.get(getattr(e, "name", None) or "")
        fix = f"digitpairs 0.3 moved it: write `{moved}`" if moved else "check the module"
        raise UserError(f"cannot import plugin {name!r} ({type(e).__name__}: {e}): {fix}") from None


MOVED = {  # modules of digitpairs 0.2 that plugins imported -> what they import now
    "digitpairs.config": "from digitpairs import Arch, Config",
    "digitpairs.models": "from digitpairs import register_arch, create_model",
    "digitpairs.keep": "from digitpairs import load_model",
}


SIGTERM_SEEN = threading.Event()


def _terminated(signum, frame):
    """SIGTERM: a KeyboardInterrupt, like SIGINT, so that the same clean-up runs (in Ray too); only the exit code and
    the message differ."""
    SIGTERM_SEEN.set()
    raise KeyboardInterrupt


RESUME = "finished runs are in the store; run the same command to resume"


def failure(e: BaseException, store) -> tuple[int, str]:
    """(exit code, the one line to print) for an error that ends a command; store: its --store, if it has one."""
    if isinstance(e, UserError):
        return 2, str(e)
    if isinstance(e, sqlite3.OperationalError) and "readonly" in str(e):
        return 2, (f"the store {store} cannot be written ({e}): pass --store with a writable file (the runs stored "
                   "so far stay)")
    if type(e) is sqlite3.DatabaseError:  # not its subclasses (a closed connection, a constraint): the file's own
        return 2, f"the store {store} is damaged ({e}): restore a copy, or pass another --store"  # written no more
    if isinstance(e, OSError) and e.errno == errno.ENAMETOOLONG:
        return 2, f"a path is too long: {e}"
    if gpu_out_of_memory(e):
        return 1, f"the GPU is out of memory: pass fewer --workers or --batch-rounds; {RESUME}"
    return 1, f"{e}: fix it (free space, a folder that exists), then {RESUME}"  # a full disk, a folder gone


def gpu_out_of_memory(e: BaseException) -> bool:
    """torch.cuda.OutOfMemoryError, told without importing torch (a command that never loaded it cannot raise it)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(e, torch.cuda.OutOfMemoryError)


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        args.command, args.plugin = "--version", []
    elif args.command is None:
        parser.error("the following arguments are required: command")
    SIGTERM_SEEN.clear()
    before = signal.signal(signal.SIGTERM, _terminated)
    try:
        for plugin in getattr(args, "plugin", []):
            load_plugin(plugin)
        module, function = COMMANDS[args.command]
        return getattr(importlib.import_module(module), function)(args)
    except KeyboardInterrupt:
        if SIGTERM_SEEN.is_set():
            print(f"digitpairs: terminated (SIGTERM); {RESUME}", file=sys.stderr)
            return 143
        print(f"digitpairs: interrupted; {RESUME}", file=sys.stderr)
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (UserError, OSError, sqlite3.DatabaseError, RuntimeError) as e:
        if isinstance(e, RuntimeError) and not gpu_out_of_memory(e):  # a bug: its traceback
            raise
        code, line = failure(e, getattr(args, "store", ""))
        print(f"digitpairs: error: {printable(line)}", file=sys.stderr)
        return code
    finally:
        signal.signal(signal.SIGTERM, before)
