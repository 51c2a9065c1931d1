"""Plugins: the user's modules that register architectures, and the networks they bring, found again by name.

A plugin is a .py file, a module's dotted name, or an installed package's entry point in the group `digitpairs.archs`
(a module, imported; or a function, called). Each is loaded once per process; its architectures register as it
loads (spec/registry.py), and remember which plugin they came from. A file is loaded as the module
`digitpairs_plugin_<stem>`, so that its functions pickle by reference: a worker process loads the same plugins before
it reads its work (runner/units.py), and a Ray task gets a file plugin's code by value (runner/ray.py).

A network factory (Arch.branch, or an Arch.head that is not a word) is named in the store by its reference
`module:qualname`; resolve() finds it again in a loaded plugin. No torch: a plugin imports it if it needs it.
"""

import hashlib
import importlib
import importlib.metadata
import importlib.util
import inspect
import sys
from contextlib import contextmanager
from pathlib import Path

from digitpairs.base.errors import UserError, first_line

GROUP = "digitpairs.archs"  # the entry-point group of installed plugins
FILE_PREFIX = "digitpairs_plugin_"  # a file plugin's module name: FILE_PREFIX + its stem

LOADED: dict[str, str] = {}  # source (an absolute .py path or a module's name) -> its module's name, in load order
CURRENT: list[str] = []  # the plugin loading now (its source), if any: what its registrations come from
_INSTALLED: list[bool] = []  # the entry points were loaded (once per process)

MOVED = {  # modules of digitpairs 0.2 that plugins imported -> what they import now
    "digitpairs.config": "from digitpairs import Arch, Config",
    "digitpairs.models": "from digitpairs import register_arch, create_model",
    "digitpairs.keep": "from digitpairs import load_model",
}


def source_of(name: str, base: Path | None = None) -> str:
    """A plugin's source as recorded: a .py file's absolute path (relative to `base` where given), or the module's
    dotted name."""
    if name.endswith(".py"):
        return str(((base or Path.cwd()) / name).resolve())
    return name


@contextmanager
def _loading(source: str):
    CURRENT.append(source)
    try:
        yield
    finally:
        CURRENT.pop()


def load(name: str, base: Path | None = None) -> str:
    """Import a plugin (a .py path, relative to `base` or the current folder, or a module's dotted name) unless it
    is loaded already; return its source. Any failure in it is one UserError."""
    source = source_of(name, base)
    if source in LOADED:
        return source
    try:
        with _loading(source):
            LOADED[source] = _import_file(Path(source)) if source.endswith(".py") else _import_module(source)
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - any failure in the user's module is reported in one line
        moved = MOVED.get(getattr(e, "name", None) or "")
        fix = f"digitpairs 0.3 moved it: write `{moved}`" if moved else "check the module"
        raise UserError(f"cannot import plugin {name!r} ({type(e).__name__}: {first_line(e)}): {fix}") from None
    return source


def _import_file(path: Path) -> str:
    if not path.is_file():
        raise UserError(f"no plugin file {path}: check the path")
    name = FILE_PREFIX + "".join(c if c.isalnum() else "_" for c in path.stem)
    other = sys.modules.get(name)
    if other is not None and getattr(other, "__file__", None) != str(path):
        raise UserError(f"two plugin files are named {path.name} ({other.__file__} and {path}): rename one")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # before it runs: its own functions pickle by reference, as a module's do
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return name


def _import_module(name: str) -> str:
    importlib.import_module(name)
    return name


def load_all(sources) -> None:
    """Load every plugin of a list of sources (loaded(): a worker process loads its driver's)."""
    for source in sources:
        load(source)


def loaded() -> list[str]:
    """The sources of the plugins loaded in this process from files and module names, in load order (the installed
    ones: load_installed())."""
    return list(LOADED)


def load_installed() -> None:
    """Load the plugins of installed packages (entry-point group `digitpairs.archs`), once per process."""
    if _INSTALLED:
        return
    _INSTALLED.append(True)
    for ep in importlib.metadata.entry_points(group=GROUP):
        source = f"{ep.value} (entry point {ep.name} of {ep.dist.name if ep.dist else 'an installed package'})"
        try:
            with _loading(ep.module):
                target = ep.load()
                if ep.attr:  # a function that registers them
                    target()
        except UserError:
            raise
        except Exception as e:  # noqa: BLE001 - one line, as for --plugin
            raise UserError(f"cannot load the installed plugin {source} ({type(e).__name__}: {first_line(e)}): "
                            "fix or uninstall that package") from None
        LOADED[source] = ep.module


def reference(fn) -> str:
    """A network factory's name in the store: `module:qualname`."""
    return f"{fn.__module__}:{fn.__qualname__}"


def resolve(ref: str, arch: str = ""):
    """The factory a reference names, from a loaded plugin (or an importable module)."""
    module_name, _, qualname = ref.partition(":")
    module = sys.modules.get(module_name)
    if module is None and not module_name.startswith(FILE_PREFIX):
        try:
            module = importlib.import_module(module_name)
        except Exception:  # noqa: BLE001 - not importable here: said below
            module = None
    target = module
    for part in qualname.split(".") if module is not None else ():
        target = getattr(target, part, None)
    if module is None or target is None or not callable(target):
        whose = f" of architecture {arch}" if arch else ""
        raise UserError(f"the network {ref}{whose} is not loaded: pass --plugin with its file or module, or install "
                        "its package")
    return target


def check_factory(fn, arch: str, role: str) -> None:
    """A factory is found again by its reference (a function or class at the top of a module, not a lambda or a
    nested function): worker processes, checkpoints and kept models rebuild it by name."""
    if not callable(fn):
        raise UserError(f"architecture {arch}: its {role} must be a function or class that builds an nn.Module, "
                        f"not {type(fn).__name__}")
    if not isinstance(getattr(fn, "__qualname__", None), str) or not isinstance(getattr(fn, "__module__", None), str):
        raise UserError(f"architecture {arch}: its {role} must be a function or class defined at the top of a "
                        f"module, not a {type(fn).__name__}: digitpairs finds it again by its name")
    try:
        found = resolve(reference(fn), arch)
    except UserError:
        found = None
    if found is not fn:
        raise UserError(f"architecture {arch}: its {role} {fn.__qualname__} must be defined at the top of a module "
                        "(not a lambda or a nested function): digitpairs finds it again by its name")


def code_hash(fn) -> str | None:
    """SHA-256 (16 hex digits) of the source file that defines a factory, or None where there is no file: part of
    what a checkpoint's key is, so that an edited network never resumes another's weights."""
    try:
        path = inspect.getsourcefile(fn)
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16] if path else None
    except (TypeError, OSError):
        return None
