"""HTML building blocks shared by both pages: one stylesheet, escaping, tables, figures.

Pages are single files: styles inline, pictures as data URIs, no script and no
request to anything outside the file (a strict Content-Security-Policy says so to the browser).
"""
from __future__ import annotations

import html
import math
import os
from collections.abc import Iterable, Sequence

from .. import __version__
from .._atomic import replaced_atomically

PAGE_FILE = "report.html"  # the name of either page in its folder

# The browser may load nothing but what the file itself holds.
CONTENT_SECURITY_POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"

STYLE = """
body { font-family: system-ui, sans-serif; margin: 0 auto; max-width: 1180px; padding: 16px 24px 48px;
       color: #1d1d1f; background: #fff; line-height: 1.4; }
h1 { font-size: 1.6em; margin: 0.4em 0 0.2em; }
h2 { font-size: 1.25em; margin: 1.6em 0 0.4em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
h3 { font-size: 1.05em; margin: 1.2em 0 0.3em; }
p.lead, p.note { color: #444; max-width: 70em; }
table { border-collapse: collapse; margin: 0.4em 0 1em; font-size: 0.92em; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
td { overflow-wrap: anywhere; }
th { background: #f4f4f6; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; overflow-wrap: normal; }
dl.summary { display: grid; grid-template-columns: max-content auto; gap: 2px 16px; margin: 0.4em 0 1em; }
dl.summary dt { color: #555; }
dl.summary dd { margin: 0; font-variant-numeric: tabular-nums; overflow-wrap: anywhere; min-width: 0; }
figure { margin: 0.6em 0 1.2em; }
figcaption { color: #444; font-size: 0.92em; max-width: 60em; }
img.figure { max-width: 100%; height: auto; border: 1px solid #eee; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(340px, 1fr)); gap: 12px; }
.card { border: 1px solid #d8d8de; border-radius: 6px; padding: 8px; background: #fafafb; }
.card .pictures { display: flex; gap: 6px; }
.card .pictures figure { margin: 0; flex: 1; }
.card .pictures img { width: 100%; height: auto; image-rendering: pixelated; border-radius: 3px; }
.card .pictures figcaption { font-size: 0.78em; text-align: center; }
.card h3 { margin: 0 0 4px; font-size: 0.98em; word-break: break-all; }
.card table.facts { margin: 6px 0 0; width: 100%; font-size: 0.85em; }
.card table.facts th { width: 45%; font-weight: normal; color: #555; background: none; }
.badge { display: inline-block; padding: 0 6px; border-radius: 8px; font-size: 0.8em; background: #e4007c;
         color: white; margin-left: 4px; }
.muted { color: #777; }
.grid { border-collapse: collapse; }
.grid td, .grid th { border: none; padding: 3px; text-align: center; font-size: 0.82em; }
.grid img { width: 150px; height: auto; image-rendering: pixelated; border-radius: 3px; }
.scale { display: flex; align-items: center; gap: 16px; flex-wrap: wrap; margin: 4px 0 8px; font-size: 0.9em; }
.roi-key { display: inline-block; width: 18px; height: 0; border-top: 2px solid rgb(0, 229, 255);
           vertical-align: middle; margin-right: 4px; }
svg.plot { max-width: 100%; height: auto; background: white; }
footer { margin-top: 3em; color: #777; font-size: 0.85em; }
"""


def escape(text) -> str:
    return html.escape(str(text), quote=True)


def page(title: str, body: str) -> str:
    """A complete HTML document: `body` is trusted markup built by this package."""
    return (
        "<!DOCTYPE html>\n<html lang='en'>\n<head>\n<meta charset='utf-8'>\n"
        f"<meta http-equiv='Content-Security-Policy' content=\"{CONTENT_SECURITY_POLICY}\">\n"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>\n"
        f"<title>{escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n{body}\n"
        f"<footer>Written by egal {escape(__version__)}. The page is one file: it needs no network.</footer>\n"
        "</body>\n</html>\n"
    )


def table(header: Sequence[str], rows: Iterable[Sequence], *, numeric: Sequence[bool] = (), css: str = "") -> str:
    """A table; cells are escaped text, or markup wrapped in Markup."""
    numeric = list(numeric) + [False] * (len(header) - len(numeric))
    head = "".join(f"<th class='num'>{escape(h)}</th>" if n else f"<th>{escape(h)}</th>"
                   for h, n in zip(header, numeric, strict=True))
    body = []
    for row in rows:
        cells = "".join(f"<td class='num'>{cell(c)}</td>" if n else f"<td>{cell(c)}</td>"
                        for c, n in zip(row, numeric, strict=True))
        body.append(f"<tr>{cells}</tr>")
    klass = f" class='{css}'" if css else ""
    return f"<table{klass}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


class Markup(str):
    """Markup that table() and definition_list() insert as it is."""


def cell(value) -> str:
    return str(value) if isinstance(value, Markup) else escape(value)


def definition_list(items: Iterable[tuple]) -> str:
    return "<dl class='summary'>" + "".join(f"<dt>{escape(k)}</dt><dd>{cell(v)}</dd>" for k, v in items) + "</dl>"


def figure(content: str, caption: str, *, css_id: str = "") -> str:
    """`content` (SVG or <img>) with a caption (text)."""
    ident = f" id='{css_id}'" if css_id else ""
    return f"<figure{ident} class='plot-figure'>{content}<figcaption>{escape(caption)}</figcaption></figure>"


def img(src: str, alt: str, css: str = "") -> str:
    klass = f" class='{css}'" if css else ""
    return f"<img{klass} src='{src}' alt='{escape(alt)}'>"


def number(value, digits: int = 3) -> str:
    """A float for a table cell: fixed digits, an en dash for NaN / None."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value:.{digits}f}"


def write_page(path, text: str) -> str:
    """Writes atomically: a reader never sees half a page. A file name that is not UTF-8 (bytes of another
    encoding on Linux) is shown with backslash escapes rather than failing the page."""
    path = os.fspath(path)
    with replaced_atomically(path) as tmp, open(tmp, "w", encoding="utf-8", errors="backslashreplace") as f:
        f.write(text)
    return path
