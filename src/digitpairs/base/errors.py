"""The errors a user can fix, and how any error is told in one line."""


class UserError(Exception):
    """A problem the user can fix (bad argument, bad file): reported as one line, exit code 2."""


def printable(text: str) -> str:
    """A message on one line whatever the paths in it hold: control characters (a newline, an escape) as escapes."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def first_line(e: BaseException | str, limit: int = 200) -> str:
    """The first non-empty line of an exception's message (its type's name where it has none) or of a text, at most
    `limit` characters: what a one-line error quotes of a library's multi-line message."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return (lines[0] if lines else type(e).__name__ if isinstance(e, BaseException) else "")[:limit]


def reason(e: BaseException) -> str:
    """Why something failed, in a few words: an operating-system error in the system's words ("Permission denied"),
    anything else by the first line of its message."""
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return first_line(e)
