"""Study files (TOML): which architectures, with which overrides and sweeps, how many rounds.

    name = "alpha"                 # the study's name in the store (default: the file's stem)
    rounds = 10
    archs = ["siamese_ws_aux", {name = "siamese_ws", dropout = true, variant = "ws_drop"}]
    select = "val"                 # optional: choose each sweep's value by validation accuracy
    [config]                       # Config fields for every run (see digitpairs.config.Config)
    n_val = 200
    [sweep]                        # every architecture x every value (Config fields or Arch flags)
    alpha = [0, 0.5, 1]

Every key and value is checked; a mistake is one line naming the file and the key.
"""

import dataclasses
import itertools
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from digitpairs import UserError
from digitpairs.config import Arch, Config
from digitpairs.config import quick as quick_preset
from digitpairs.models import get_arch, own_settings

CONFIG_FIELDS = {f.name: f for f in dataclasses.fields(Config)}
ARCH_FLAGS = {"share": bool, "aux": bool, "bn": bool, "dropout": bool, "head": str}
HEADS = ("mlp", "logic", "prob")
TOP_KEYS = {"name", "rounds", "archs", "config", "sweep", "select"}
ARCH_KEYS = {"name", "variant", "label"} | set(ARCH_FLAGS) | set(CONFIG_FIELDS)


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

    def spec(self) -> dict:
        """What identifies the study in the store: its variants and their configs."""
        return {"rounds": self.rounds, "select": self.select,
                "variants": [{"name": v.name, "base": v.base, "sweep": dict(v.sweep), "arch": v.arch.to_dict(),
                              "config": v.cfg.to_dict()} for v in self.variants]}


def shipped(name: str) -> Path:
    """The path of a study file shipped with the package (studies/NAME.toml)."""
    return Path(str(resources.files("digitpairs") / "studies" / f"{name}.toml"))


def _value(where: str, key: str, value, expected):
    """Check (and coerce int -> float) a value against the type of its field."""
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
    for key in keys:
        if key not in known:
            raise UserError(f"{where}: unknown key {key!r} (known: {', '.join(sorted(known))})")


def _fmt(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v).lower() if isinstance(v, bool) else str(v)


def build(spec: dict, where: str, quick: bool = False, overrides: dict | None = None) -> Study:
    """A Study from a parsed study file. A variant's config is, each layer over the one before: Config's defaults,
    the file's [config], the architecture's own settings (Arch.extra), the quick preset if asked, `overrides`
    (Config fields from the command line), and last the variant's own settings and sweep values."""
    _unknown(where, spec, TOP_KEYS)
    name = _value(where, "name", spec.get("name", Path(where).stem), str)
    rounds = _value(where, "rounds", spec.get("rounds", 10), int)
    if rounds <= 0:
        raise UserError(f"{where}: rounds must be positive, not {rounds}")
    select = spec.get("select")
    if select not in (None, "val"):
        raise UserError(f"{where}: select must be \"val\", not {select!r}")
    config = spec.get("config", {})
    if not isinstance(config, dict):
        raise UserError(f"{where}: [config] must be a table")
    _unknown(f"{where} [config]", config, CONFIG_FIELDS)
    values = {k: _value(f"{where} [config]", k, v, _field_type(k)) for k, v in config.items()}
    overrides = overrides or {}
    try:
        file_cfg = Config().replace(**values)
        cfg = (quick_preset(file_cfg) if quick else file_cfg).replace(**overrides)  # checked here, used below
    except UserError as e:
        raise UserError(f"{where} [config]: {e}") from None
    sweep = spec.get("sweep", {})
    if not isinstance(sweep, dict):
        raise UserError(f"{where}: [sweep] must be a table")
    _unknown(f"{where} [sweep]", sweep, set(CONFIG_FIELDS) | set(ARCH_FLAGS))
    for k, vs in sweep.items():
        if not isinstance(vs, list) or not vs:
            raise UserError(f"{where} [sweep]: {k} must be a non-empty list of values")
        sweep[k] = [_value(f"{where} [sweep]", k, v, _field_type(k)) for v in vs]
    archs = spec.get("archs")
    if not isinstance(archs, list) or not archs:
        raise UserError(f"{where}: archs must be a non-empty list of architecture names or tables")
    variants = []
    for entry in archs:
        entry = {"name": entry} if isinstance(entry, str) else entry
        if not isinstance(entry, dict) or "name" not in entry:
            raise UserError(f"{where}: each entry of archs is a name or a table with a name, not {entry!r}")
        _unknown(f"{where} archs.{entry['name']}", entry, ARCH_KEYS)
        try:
            base_arch = get_arch(entry["name"])
        except UserError as e:
            raise UserError(f"{where}: {e}") from None
        own = {k: _value(f"{where} archs.{entry['name']}", k, v, _field_type(k))
               for k, v in entry.items() if k not in ("name", "variant", "label")}
        for k, v in list(own.items()) + [(k, v) for k, vs in sweep.items() for v in vs]:
            if k == "head" and v not in HEADS:
                raise UserError(f"{where}: head must be one of {', '.join(HEADS)}, not {v!r}")
        for combo in itertools.product(*sweep.values()):
            point = dict(zip(sweep, combo))
            changes = own | point
            suffix = ",".join(f"{k}={_fmt(v)}" for k, v in changes.items())
            vname = entry.get("variant") or (f"{base_arch.name}[{suffix}]" if suffix else base_arch.name)
            if entry.get("variant") and point:
                vname += "[" + ",".join(f"{k}={_fmt(v)}" for k, v in point.items()) + "]"
            label = entry.get("label") or (f"{base_arch.label} ({suffix})" if suffix else base_arch.label)
            flags = {k: v for k, v in changes.items() if k in ARCH_FLAGS}
            fields = {k: v for k, v in changes.items() if k in CONFIG_FIELDS}
            arch = dataclasses.replace(base_arch, name=vname, label=label, extra={}, **flags)  # extra is in vcfg
            if changes:  # the report's figures are for the architecture as the report ran it
                arch = dataclasses.replace(arch, report=None)
            try:
                size = fields.get("size", cfg.size)
                vcfg = file_cfg.replace(**own_settings(base_arch, size))
                vcfg = (quick_preset(vcfg) if quick else vcfg).replace(**overrides).replace(**fields)
            except UserError as e:
                raise UserError(f"{where} archs.{entry['name']}: {e}") from None
            variants.append(Variant(vname, base_arch.name, arch, vcfg, tuple(point.items())))
    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        raise UserError(f"{where}: two archs entries make the same variant; give one a `variant` name")
    return Study(name, rounds, tuple(variants), select)


def load(path: Path, quick: bool = False, overrides: dict | None = None) -> Study:
    return build(read(path), str(path), quick, overrides)


def read(path: Path) -> dict:
    """The parsed TOML of a study file; a missing or malformed file is one line."""
    path = Path(path)
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"no study file {path}: pass the path of a .toml study file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read the study file {path} ({e})") from None
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{path} is not valid TOML ({e})") from None
