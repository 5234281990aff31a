"""What a file given as a PyTorch checkpoint is, from its bytes alone (no PyTorch needed).

torch.save writes a zip archive whose one top folder holds data.pkl. A file that is not one (empty, cut short, text,
random bytes, another zip archive) is named as such here: torch.load would report it as an unpickling error, which
reads as if the file held Python objects.
"""
from __future__ import annotations

import zipfile

# How a file of torch.save's format before PyTorch 1.6 begins (a pickled magic number): torch.load still reads it.
LEGACY_START = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"
_SNIFF = 512  # bytes read to tell text from other bytes


def is_torch_archive(path) -> bool:
    """A file torch.save wrote: a zip archive whose one top folder holds data.pkl."""
    names = _names(path)
    return names is not None and _holds_data_pkl(names)


def not_a_checkpoint(path) -> str | None:
    """Why `path` is not a PyTorch checkpoint ('it is empty (0 bytes)'), or None when it may be one (a zip archive of
    torch.save, or its legacy format): torch.load says the rest."""
    with open(path, "rb") as f:
        head = f.read(_SNIFF)
    if not head:
        return "it is empty (0 bytes)"
    if head.startswith(LEGACY_START):
        return None
    if not head.startswith(b"PK"):
        kind = "text" if _is_text(head) else "bytes of another kind"
        return f"it holds {kind}, not the zip archive that torch.save writes"
    names = _names(path)
    if names is None:
        return ("it is cut short or damaged: a zip archive, as torch.save writes, without its end (a save or a copy "
                "that did not finish?)")
    if not _holds_data_pkl(names):
        return "it is a zip archive, but not one that torch.save wrote (it holds no data.pkl)"
    return None


def _names(path) -> list[str] | None:
    """The names in the zip archive `path`, or None when it is not one that can be read."""
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return None


def _holds_data_pkl(names) -> bool:
    return any(name.count("/") == 1 and name.endswith("/data.pkl") for name in names)


def _is_text(head: bytes) -> bool:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 3:  # (not a character cut at the end of what was read)
            return False
        text = head[:exc.start].decode("utf-8")
    return all(c.isprintable() or c.isspace() for c in text)
