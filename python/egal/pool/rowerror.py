"""The reason one row cannot be decoded (never a reason to stop the whole pool)."""


class RowError(ValueError):
    """Its message is the short reason stored in DecodedBatch.errors, e.g. "image: ...", "boxes: ..."."""
