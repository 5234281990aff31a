"""The one exception of egal.importers: a dataset, option or file that the user must fix.

It derives from egal's user-error base class, so `egal pool ...` prints the message and exits
with status 2, without a traceback. Problems with single images or annotations are not
raised: they are skipped and counted (egal.importers.ledger).
"""
from __future__ import annotations

from ..errors import EgalError


class SourceError(EgalError):
    """A dataset folder, table or option that cannot be imported; the message says what to change."""
