"""main(): the `digitpairs` command. It parses the flags (cli/parser.py), loads the plugins (spec/plugins.py), runs one command's
function and turns what ends it into an exit code and at most one line: 2 for what the user can fix, 130 and 143
for Ctrl-C and SIGTERM. Each command's module is imported only when that command runs, so `--help` and the
commands that only read the store load no torch."""

import errno
import importlib
import os
import signal
import sqlite3
import sys
import threading

from digitpairs.base.errors import UserError, printable
from digitpairs.cli.parser import build_parser
from digitpairs.spec import plugins

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


NEEDS_REGISTRY = {"list", "run", "reproduce", "bench", "predict"}  # commands that also load installed plugins
TRAINS_A_STUDY = {"run", "reproduce"}  # commands whose finished runs an interrupt leaves in the store


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
        if args.command in NEEDS_REGISTRY:
            plugins.load_installed()
        for plugin in getattr(args, "plugin", []):
            plugins.load(plugin)
        module, function = COMMANDS[args.command]
        return getattr(importlib.import_module(module), function)(args)
    except KeyboardInterrupt:
        then = f"; {RESUME}" if args.command in TRAINS_A_STUDY else ""
        if SIGTERM_SEEN.is_set():
            print(f"digitpairs: terminated (SIGTERM){then}", file=sys.stderr)
            return 143
        print(f"digitpairs: interrupted{then}", file=sys.stderr)
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
