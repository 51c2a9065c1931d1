"""digitpairs: architecture studies on pairs of MNIST digits (is the first digit <= the second?)."""

__version__ = "0.2.0"


class UserError(Exception):
    """A problem the user can fix (bad argument, bad file): reported as one line, exit code 2."""


def printable(text: str) -> str:
    """A message on one line whatever the paths in it hold: control characters (a newline, an escape) as escapes."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
