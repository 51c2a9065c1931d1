"""Numbers as the report writes them: table cells and p-values, in cells and in sentences."""

import math


def number(x, spec: str = ".4f") -> str:
    """A table cell of a number: empty for none, or for nan (an SD of one round)."""
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def p_cell(p: float) -> str:
    """A p-value for a table cell."""
    return "n/a" if math.isnan(p) else "< 0.0001" if p < 1e-4 else f"{p:.4f}"


def p_words(p: float) -> str:
    """A p-value in a sentence, after "p ": "< 0.001", "= 0.042", or why it is undefined."""
    if math.isnan(p):
        return "undefined (the same difference in every round)"
    return "< 0.001" if p < 0.001 else f"= {p:.3f}"
