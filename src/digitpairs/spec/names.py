"""Names of studies and variants: they become folder names (reports, checkpoints), so they hold only characters
that are safe in a folder's name on every system."""

import re

from digitpairs.base.errors import UserError

NAME = re.compile(r"[A-Za-z0-9_\-.,=+\[\]]+")  # study and variant names: safe as a folder's name on every system
MAX_NAME = 100


def safe_name(name) -> bool:
    """Whether name is safe as a study or variant name (it becomes a folder's name): letters, digits and
    `_ - . , = + [ ]`, so no path separator; not starting with a dot; at most MAX_NAME characters."""
    return isinstance(name, str) and bool(NAME.fullmatch(name)) and not name.startswith(".") and len(name) <= MAX_NAME


def check_name(name, where: str) -> str:
    """name, if safe_name(name); else a UserError that says what a name may hold."""
    if not safe_name(name):
        raise UserError(f"{where}: {name!r} is not a valid name: use letters, digits and _ - . , = + [ ] only, at most "
                        f"{MAX_NAME}, not starting with a dot")
    return name
