"""digitpairs: architecture studies on pairs of MNIST digits (is the first digit <= the second?)."""

__version__ = "0.2.0"


class UserError(Exception):
    """A problem the user can fix (bad argument, bad file): reported as one line, exit code 2."""
