"""The report's blocks (headings, text, list, table, image, code) rendered as Markdown and as one self-contained
HTML page, so that report.md and report.html always say the same thing."""

import base64
import html
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Column:
    """One column of a table, for every format: its header, the cell Markdown and HTML show, the row's keys that
    CSV writes (none: not in the CSV), and whether Markdown and HTML show it."""
    header: str
    cell: Callable[[dict], object]
    keys: tuple[str, ...] = ()
    shown: bool = True


def table(cols: list[Column], rows: list[dict]) -> tuple:
    """The ("table", header, cells) block of the shown columns."""
    shown = [c for c in cols if c.shown]
    return ("table", [c.header for c in shown], [[c.cell(r) for c in shown] for r in rows])


def csv_rows(cols: list[Column], rows: list[dict]) -> list[list]:
    """The CSV's header (the keys of every column) and its rows."""
    keys = [k for c in cols for k in c.keys]
    return [keys] + [[r[k] for k in keys] for r in rows]


def render_md(blocks: list[tuple]) -> str:
    lines = []
    for kind, *rest in blocks:
        if kind in ("h1", "h2", "h3"):
            lines += ["#" * int(kind[1]) + " " + rest[0], ""]
        elif kind == "p":
            lines += [rest[0], ""]
        elif kind == "li":
            lines += [f"- {item}" for item in rest[0]] + [""]
        elif kind == "table":
            head, rows = rest
            lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows] + [""]
        elif kind == "img":
            lines += [f"![{rest[1]}]({rest[0]})", ""]
        elif kind == "code":
            lines += ["```json", rest[0], "```", ""]
    return "\n".join(lines)


def inline(text) -> str:
    """Text for HTML: escaped, and what Markdown writes between backticks (a variant's name) as code."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(str(text)))


def render_html(blocks: list[tuple], out: Path) -> str:
    """One self-contained page: the figures are embedded as data URIs; `names` are code, as Markdown shows them."""
    esc, text = html.escape, inline
    parts = []
    for kind, *rest in blocks:
        if kind in ("h1", "h2", "h3"):
            parts.append(f"<{kind}>{text(rest[0])}</{kind}>")
        elif kind == "p":
            parts.append(f"<p>{text(rest[0])}</p>")
        elif kind == "li":
            parts.append("<ul>" + "".join(f"<li>{text(i)}</li>" for i in rest[0]) + "</ul>")
        elif kind == "table":
            head, rows = rest
            parts.append("<table><thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr></thead><tbody>"
                         + "".join("<tr>" + "".join(f"<td>{text(c)}</td>" for c in row) + "</tr>" for row in rows)
                         + "</tbody></table>")
        elif kind == "img":
            data = base64.b64encode((out / rest[0]).read_bytes()).decode()
            parts.append(f'<figure><img alt="{esc(rest[1])}" src="data:image/png;base64,{data}"></figure>')
        elif kind == "code":
            parts.append(f"<details><summary>config</summary><pre>{esc(rest[0])}</pre></details>")
    style = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}table{border-collapse:"
             "collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:4px 8px;text-align:right}td:first-child,"
             "th:first-child,td:nth-child(2),th:nth-child(2){text-align:left}img{max-width:100%}code{font-size:90%}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>digitpairs report</title><style>{style}</style>"
            f"</head><body>{''.join(parts)}</body></html>\n")
