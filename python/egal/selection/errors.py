"""The user error of selection: a bad option or bad input to a selection method."""
from ..errors import EgalError


class SelectionError(EgalError):
    """A selection that cannot be made as asked: a group column that is missing or null, a per-group cap
    below 1, a diversity method without embeddings, embeddings with NaN or of the wrong shape. The message
    names the argument (the CLI names its flag instead)."""
