"""Text from a dataset (ids, class names, file names) as it is printed on a terminal.

An id or a label comes from whoever made the pool, and a terminal acts on the control characters in what it
prints: an escape sequence in an id could recolour or hide the lines around it, retitle the window, or, where the
terminal allows it, write to the clipboard. Printed summaries and tables show such characters escaped, as Python
writes them in a string literal (\\x1b), and leave every other character, accents and scripts included, as it is.
Messages that quote a value with !r are escaped already.
"""
from __future__ import annotations


def shown(value) -> str:
    """str(value) with each non-printable character written as its escape."""
    text = str(value)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
