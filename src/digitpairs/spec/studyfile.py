"""Study files (TOML): which architectures, with which overrides and sweeps, how many rounds.

    name = "alpha"                 # the study's name in the store (default: the file's stem)
    rounds = 10
    archs = ["siamese_ws_aux", {name = "siamese_ws", dropout = true, variant = "ws_drop"}]
    select = "val"                 # optional: choose each sweep's value by validation accuracy
    model = "siamese_ws_aux"       # optional: the variant `digitpairs predict` answers with (else: by validation)
    plugins = ["my_nets.py"]       # optional: modules that register architectures (.py paths relative to this file,
                                   # or dotted module names), loaded before the archs are looked up
    [config]                       # Config fields for every run (see digitpairs.spec.config.Config)
    n_val = 200
    [sweep]                        # every architecture x every value (Config fields or Arch flags)
    alpha = [0, 0.5, 1]
    [[claims]]                     # optional: claims the report checks on this study's rounds (spec/claims.py)
    better = "siamese_ws_aux"
    worse = "siamese_ws"
    text = "The auxiliary loss improves the weight-shared net."

Arch flags: share, bn, dropout, head (how the answer is made: mlp, logic, prob) and objective (what the network
learns from: comparison, comparison+digits, digits); a pair of head and objective that cannot learn its answer is
refused (spec.arch.Arch.validate).

Every key and value is checked before any training; a mistake is one line naming the file and the key. Study and
variant names become folder names: letters, digits and `_ - . , = + [ ]`, not starting with a dot (check_name).
"""

import dataclasses
import itertools
import math
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from digitpairs.base.errors import UserError
from digitpairs.spec import claims as claim_specs
from digitpairs.spec import plugins
from digitpairs.spec.arch import HEADS, OBJECTIVES, Arch
from digitpairs.spec.config import MAX_ROUNDS, QUICK_ROUNDS, RUN_OPTIONS, Config
from digitpairs.spec.config import quick as quick_preset
from digitpairs.spec.names import check_name, safe_name
from digitpairs.spec.registry import ARCHS, get_arch, own_settings

CONFIG_FIELDS = {f.name: f for f in dataclasses.fields(Config)}
ARCH_FLAGS = {"share": bool, "objective": str, "bn": bool, "dropout": bool, "head": str}
CHOICES = {"head": HEADS, "objective": OBJECTIVES}  # the Arch flags that take one of a few words
TOP_KEYS = {"name", "rounds", "archs", "config", "sweep", "select", "claims", "model", "plugins"}
ARCH_KEYS = {"name", "variant", "label"} | set(ARCH_FLAGS) | set(CONFIG_FIELDS)
MAX_VARIANTS = 1000  # archs x sweep points: a sweep that multiplies beyond this is a mistake, not a study


@dataclass(frozen=True)
class Variant:
    """One row of a study: an architecture with its resolved config."""
    name: str  # unique in the study, e.g. "siamese_ws_aux" or "siamese_ws_aux[alpha=0.1]"
    base: str  # the registered architecture it derives from
    arch: Arch
    cfg: Config
    sweep: tuple[tuple[str, object], ...] = ()  # the sweep values this variant stands for


@dataclass(frozen=True)
class Study:
    name: str
    rounds: int
    variants: tuple[Variant, ...]
    select: str | None = None  # "val": sweeps choose by validation accuracy
    claims: tuple[dict, ...] = ()  # what the report checks on the study's rounds (spec/claims.py)
    model: str | None = None  # the variant predict uses, named beforehand: choosing it on test would flatter it
    plugins: tuple[str, ...] = ()  # the plugins its file loads (spec/plugins.py sources): predict loads them again

    def spec(self) -> dict:
        """What identifies the study in the store: its variants and their configs; and its claims, model and
        plugins, where it names them (they are read by the report and predict, not part of what was trained)."""
        return {"rounds": self.rounds, "select": self.select,
                "variants": [{"name": v.name, "base": v.base, "sweep": dict(v.sweep), "arch": v.arch.to_dict(),
                              "config": v.cfg.to_dict()} for v in self.variants]} | (
            {"claims": list(self.claims)} if self.claims else {}) | ({"model": self.model} if self.model else {}) | (
            {"plugins": list(self.plugins)} if self.plugins else {})


def shipped(name: str) -> Path:
    """The path of a study file shipped with the package (studies/NAME.toml)."""
    return Path(str(resources.files("digitpairs.spec") / "studies" / f"{name}.toml"))


def shipped_names() -> list[str]:
    """The shipped studies' names, the paper's first."""
    names = sorted(p.stem for p in shipped("paper").parent.glob("*.toml"))
    return ["paper"] + [n for n in names if n != "paper"]


def _value(where: str, key: str, value, expected):
    """Check (and coerce int -> float, list -> tuple) a value against the type of its field; Config.validate checks
    its range and the elements of a tuple."""
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if expected is tuple and isinstance(value, list):
        return tuple(value)
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        raise UserError(f"{where}: {key} must be {expected.__name__}, not {value!r}")
    return value


def _field_type(key: str) -> type:
    if key in ARCH_FLAGS:
        return ARCH_FLAGS[key]
    t = CONFIG_FIELDS[key].type  # a class, or tuple[int, int]
    return t if isinstance(t, type) else tuple


def _unknown(where: str, keys, known) -> None:
    if "aux" in keys and "objective" in known:  # the flag's name before objective
        raise UserError(f"{where}: aux is now objective: write objective = \"comparison+digits\" for aux = true "
                        "(L_cmp + alpha * L_digits), \"comparison\" for aux = false")
    for key in keys:
        if key not in known:
            raise UserError(f"{where}: unknown key {key!r} (known: {', '.join(sorted(known))})")


def _fmt(v) -> str:
    if isinstance(v, tuple | list):  # channels: "16x32", a name without spaces
        return "x".join(_fmt(x) for x in v)
    return f"{v:g}" if isinstance(v, float) else str(v).lower() if isinstance(v, bool) else str(v)


def _suffix(changes: dict) -> str:
    return ",".join(f"{k}={_fmt(v)}" for k, v in changes.items())


def build(spec: dict, where: str, quick: bool = False, overrides: dict | None = None) -> Study:
    """A Study from a parsed study file (`where` names it in messages); every key and value is checked here, before
    any training. `overrides` are Config fields from the command line; see resolve_config for the layers."""
    _unknown(where, spec, TOP_KEYS)
    name = spec.get("name", Path(where).stem)
    if "name" in spec:
        check_name(_value(where, "name", name, str), f"{where}: name")
    elif not safe_name(name):
        raise UserError(f"{where}: the file's name {name!r} is no valid study name (letters, digits and _ - . , = + [ ] "
                        "only): set name = \"...\" in the file, or rename it")
    rounds = _value(where, "rounds", spec.get("rounds", 10), int)
    if not 1 <= rounds <= MAX_ROUNDS:
        raise UserError(f"{where}: rounds must be in [1, {MAX_ROUNDS}], not {rounds}")
    select = spec.get("select")
    if select not in (None, "val"):
        raise UserError(f"{where}: select must be \"val\", not {select!r}")
    sources = _plugins(spec.get("plugins", []), where)
    file_cfg = _file_config(spec.get("config", {}), where, quick, overrides or {})
    sweep = _sweep(spec.get("sweep", {}), where)
    archs = spec.get("archs")
    if not isinstance(archs, list) or not archs:
        raise UserError(f"{where}: archs must be a non-empty list of architecture names or tables")
    n = len(archs) * math.prod(len(vs) for vs in sweep.values())
    if n > MAX_VARIANTS:
        raise UserError(f"{where}: archs x [sweep] make {n} variants, more than {MAX_VARIANTS}: split the study")
    variants = [v for entry in archs for v in _variants(entry, where, file_cfg, sweep, quick, overrides or {})]
    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        raise UserError(f"{where}: two archs entries make the same variant; give one a `variant` name")
    claims = claim_specs.parse(spec.get("claims", []), where, set(names) | set(ARCHS))
    if select == "val" and any(v.cfg.n_val == 0 for v in variants):
        bare = next(v.name for v in variants if v.cfg.n_val == 0)
        raise UserError(f"{where}: select = \"val\" chooses on a validation split, and {bare} has none: set n_val "
                        "(e.g. 200) in [config]")
    model = spec.get("model")  # a registered architecture too: `reproduce --archs` may leave it out of the study
    if model is not None and _value(where, "model", model, str) not in set(names) | set(ARCHS):
        raise UserError(f"{where}: model {model!r} is no variant of this study nor a registered architecture")
    return Study(name, rounds, tuple(variants), select, tuple(claims), model, sources)


def _plugins(names, where: str) -> tuple[str, ...]:
    """Load a study file's plugins (.py paths relative to the file, or module names); their sources."""
    if not isinstance(names, list) or not all(isinstance(n, str) and n.strip() for n in names):
        raise UserError(f"{where}: plugins must be a list of .py paths (relative to the file) or module names")
    return tuple(plugins.load(n, Path(where).parent) for n in names)


def _run_option(where: str, option: str, there: str) -> UserError:
    """The error for a run option (config.RUN_OPTIONS) where only what a study trains may be set."""
    flag = option.replace("_", "-")
    return UserError(f"{where}: {option} says how a study runs, not what it trains: {there}pass --{flag}"
                     + f" or --no-{flag}" * (option == "cuda_graphs"))


def _file_config(config, where: str, quick: bool, overrides: dict) -> Config:
    """The file's [config] over Config's defaults, checked, and checked again under --quick and the command line."""
    if not isinstance(config, dict):
        raise UserError(f"{where}: [config] must be a table")
    _unknown(f"{where} [config]", config, CONFIG_FIELDS)
    values = {k: _value(f"{where} [config]", k, v, _field_type(k)) for k, v in config.items()}
    try:
        file_cfg = Config().replace(**values)
    except UserError as e:
        raise UserError(f"{where} [config]: {e}") from None
    (quick_preset(file_cfg) if quick else file_cfg).replace(**overrides)  # the command line's values, checked
    return file_cfg


def _sweep(sweep, where: str) -> dict[str, list]:
    """{key: values} of the [sweep] table, each value checked against its field's type."""
    if not isinstance(sweep, dict):
        raise UserError(f"{where}: [sweep] must be a table")
    _unknown(f"{where} [sweep]", sweep, set(CONFIG_FIELDS) | set(ARCH_FLAGS))
    for option in set(RUN_OPTIONS) & set(sweep):
        raise _run_option(f"{where} [sweep]", option, "")
    out = {}
    for k, vs in sweep.items():
        if not isinstance(vs, list) or not vs:
            raise UserError(f"{where} [sweep]: {k} must be a non-empty list of values")
        out[k] = [_value(f"{where} [sweep]", k, v, _field_type(k)) for v in vs]
        twice = [v for v in out[k] if out[k].count(v) > 1]
        if twice:
            raise UserError(f"{where} [sweep]: {k} lists {twice[0]!r} twice")
        if k in CHOICES and not set(out[k]) <= set(CHOICES[k]):
            raise UserError(f"{where} [sweep]: {k} must be one of {', '.join(CHOICES[k])}, not {out[k]!r}")
    return out


def _variants(entry, where: str, file_cfg: Config, sweep: dict, quick: bool, overrides: dict) -> list[Variant]:
    """The variants of one archs entry: one per point of the sweep."""
    entry = {"name": entry} if isinstance(entry, str) else entry
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise UserError(f"{where}: each entry of archs is a name or a table with a name, not {entry!r}")
    here = f"{where} archs.{entry['name']}"
    _unknown(here, entry, ARCH_KEYS)
    for option in set(RUN_OPTIONS) & set(entry):  # per variant, it would enter the variant's name
        raise _run_option(here, option, "set it in [config], or ")
    try:
        base = get_arch(entry["name"])
    except UserError as e:
        raise UserError(f"{where}: {e}") from None
    variant = check_name(entry["variant"], f"{here}: variant") if "variant" in entry else None
    label = entry.get("label")
    if label is not None and (not isinstance(label, str) or not label.isprintable() or not 0 < len(label) <= 100):
        raise UserError(f"{here}: label must be one printable line of 1-100 characters, not {label!r}")
    own = {k: _value(here, k, v, _field_type(k)) for k, v in entry.items() if k not in ("name", "variant", "label")}
    for k, choices in CHOICES.items():
        if k in own and own[k] not in choices:
            raise UserError(f"{here}: {k} must be one of {', '.join(choices)}, not {own[k]!r}")
    out = []
    for combo in itertools.product(*sweep.values()):
        point = dict(zip(sweep, combo))
        changes = own | point
        vname = variant_name(base.name, variant, changes, point)
        flags = {k: v for k, v in changes.items() if k in ARCH_FLAGS}
        fields = {k: v for k, v in changes.items() if k in CONFIG_FIELDS}
        arch = dataclasses.replace(base, name=vname, extra={}, **flags,  # extra is in the variant's config
                                   label=label or (f"{base.label} ({_suffix(changes)})" if changes else base.label))
        if changes:  # the report's figures are for the architecture as the report ran it
            arch = dataclasses.replace(arch, report=None)
        try:
            arch.validate()
            vcfg = resolve_config(base, file_cfg, fields, quick, overrides)
        except UserError as e:
            raise UserError(f"{here}: {e}") from None
        out.append(Variant(vname, base.name, arch, vcfg, tuple(point.items())))
    return out


def variant_name(base: str, variant: str | None, changes: dict, point: dict) -> str:
    """The variant's name in the store: its `variant` name, or the architecture's with what it changes, e.g.
    "siamese_ws_aux[lr=0.002,alpha=0.5]"; a named variant gains its sweep point, e.g. "ws_drop[alpha=0.5]"."""
    if variant:
        name = variant + (f"[{_suffix(point)}]" if point else "")
    else:
        name = f"{base}[{_suffix(changes)}]" if changes else base
    return check_name(name, "variant name")  # it names folders (checkpoints) too


def resolve_config(base: Arch, file_cfg: Config, fields: dict, quick: bool, overrides: dict) -> Config:
    """A variant's Config, each layer over the one before: Config's defaults and the file's [config] (file_cfg), the
    architecture's own settings (Arch.extra) at the variant's image size, the quick preset if asked, the command
    line's `overrides`, and last the variant's own settings and sweep values (`fields`)."""
    size = fields.get("size", overrides.get("size", file_cfg.size))
    file_cfg.replace(size=size)  # a size it cannot run at is refused before its size-keyed settings are looked up
    cfg = file_cfg.replace(**own_settings(base, size))
    return (quick_preset(cfg) if quick else cfg).replace(**overrides).replace(**fields)


def run_name(name: str, overrides: dict) -> str:
    """A study's name in the store as `digitpairs run` and digitpairs.run give it: its file's name (NAME-quick under
    --quick) and -FIELDvalue for each Config field the command changes, but the run options: a float as Python
    writes it, every digit kept (two learning rates never share a name), a pair as 16x32, a bool as true or false."""
    name += "".join(f"-{k}{v if isinstance(v, float) else _fmt(v)}"
                    for k, v in sorted(overrides.items()) if k not in RUN_OPTIONS)
    return check_name(name, "the study's name from its file and the fields the flags change (--study NAME names it)")


def load(path: Path, quick: bool = False, overrides: dict | None = None) -> Study:
    return build(read(path), str(path), quick, overrides)


def locate(path: Path) -> Path:
    """A study file's path: the one given, or the shipped study of that name (`run alpha` beside a folder named
    alpha is the shipped study)."""
    path = Path(path)
    if path.suffix != ".toml" and not path.is_file() and shipped(str(path)).is_file():
        return shipped(str(path))
    return path


def load_study(study: str | Path, quick: bool = False, overrides: dict | None = None) -> Study:
    """A Study from a study file's path or a shipped study's name (paper, alpha, ...), with Config overrides (as the
    command line's flags give them) and, if asked, the quick preset: then named NAME-quick, with QUICK_ROUNDS
    rounds, as `digitpairs run --quick` names and runs it."""
    loaded = load(locate(Path(study)), quick, overrides)
    if not quick:
        return loaded
    return dataclasses.replace(loaded, name=f"{loaded.name}-quick", rounds=QUICK_ROUNDS)


def read(path: Path) -> dict:
    """The parsed TOML of a study file; a missing or malformed file is one line."""
    path = Path(path)
    try:
        return tomllib.loads(path.read_text(encoding="utf-8-sig"))  # a byte-order mark is no statement
    except FileNotFoundError:
        raise UserError(f"no study file {path}: pass the path of a .toml study file, or a shipped study's name "
                        f"({', '.join(shipped_names())})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read the study file {path} ({e})") from None
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{path} is not valid TOML ({e})") from None
