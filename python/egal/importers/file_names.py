"""Names in an export: how an id (a file's stem) or a label (the folders target's class folder) is written as a file
or folder name that every system the export is copied to can hold, and read back.

An export is often copied to an annotator's Windows machine, where 'scan:1.png' or a folder 'CON' cannot exist.
So `%`, `/` and `\\`, the characters Windows refuses in a name (< > : " | ? *), a leading "." (a hidden file) and a
trailing "." or space (which Windows drops from a name: the folder 'grade 2.' would open as 'grade 2') are written as
%XX, and so is the first letter of a Windows device name (CON, PRN, AUX, NUL, COM1-9, LPT1-9 and COM¹²³, LPT¹²³, with
any extension: 'aux.1', 'COM3.x'), as Microsoft's "Naming Files, Paths, and Namespaces" lists them.

`name_of` writes a name and `text_of_name` reads it back (its inverse, tested with hypothesis): export-selection names
ids' files and labels' folders with the one; add-labels (CVAT's image names) and from-folders (class folders) read
them with the other.
"""
from __future__ import annotations

import re

from .errors import SourceError

FILE_NAME_ESCAPES = {"%": "%25", "/": "%2F", "\\": "%5C", ":": "%3A", "*": "%2A", "?": "%3F", '"': "%22", "<": "%3C",
                     ">": "%3E", "|": "%7C"}
LEADING_DOT_ESCAPE = "%2E"
TRAILING_ESCAPES = {".": "%2E", " ": "%20"}
# Windows' device names, which a file or folder may not be called with any extension ('con.png', 'COM1.x.png'): a
# name that is one has its first letter escaped, as %XX.
WINDOWS_DEVICE_NAMES = frozenset({"CON", "PRN", "AUX", "NUL", *(f"{port}{i}" for port in ("COM", "LPT")
                                                                   for i in [*"123456789", *"\u00b9\u00b2\u00b3"])})
DEVICE_NAME_ESCAPES = {c: f"%{ord(c):02X}" for c in "CPANLcpanl"}  # their first letters
MAX_NAME_BYTES = 200  # file names of ids and labels: below the 255 bytes of common file systems, room for a suffix
_UNESCAPED = {code: c for escapes in (FILE_NAME_ESCAPES, {".": LEADING_DOT_ESCAPE}, TRAILING_ESCAPES,
                                      DEVICE_NAME_ESCAPES) for c, code in escapes.items()}
_ESCAPE_PATTERN = re.compile("|".join(map(re.escape, _UNESCAPED)))


def name_of(text: str) -> str:
    """`text` (an id, a label) as a file or folder name: '%', '/', '\\', the characters Windows refuses, a leading '.'
    and a trailing '.' or space written as %XX, and the first letter of a Windows device name too, so that ids that are
    paths (from-csv's default, from-folders --ids path) export one file each, and a class 'CON' or 'a:b' a folder,
    on any system the export is copied to."""
    name = "".join(FILE_NAME_ESCAPES.get(c, c) for c in text)
    if name.startswith("."):
        name = LEADING_DOT_ESCAPE + name[1:]
    elif name.split(".", 1)[0].rstrip(" ").upper() in WINDOWS_DEVICE_NAMES:
        name = DEVICE_NAME_ESCAPES[name[0]] + name[1:]
    if name.endswith(tuple(TRAILING_ESCAPES)):
        name = name[:-1] + TRAILING_ESCAPES[name[-1]]
    return name


def text_of_name(name: str) -> str:
    """The text (id, label) whose file or folder is called `name` (name_of's inverse). A name that name_of did not
    write reads as it is, but for the %XX codes above ('100%' stays '100%'; 'a%3Ab' reads 'a:b')."""
    return _ESCAPE_PATTERN.sub(lambda m: _UNESCAPED[m.group(0)], name)



def check_file_name(name: str, what: str = "id") -> None:
    """SourceError when `name` (as name_of wrote it) cannot be a file name anywhere: empty, too long, or with a
    control character."""
    if not name or "/" in name or "\\" in name or name.startswith(".") or "\0" in name:
        raise SourceError(f"{what} {name!r} cannot be used as a file name (it is empty, starts with '.' or holds a "
                          "slash); export needs ids and labels that are plain names")
    if len(name.encode()) > MAX_NAME_BYTES:
        raise SourceError(f"{what} {name[:40]!r}... is {len(name.encode())} bytes long, too long for a file name "
                          f"(at most {MAX_NAME_BYTES}); export needs shorter ids and labels")
    check_no_control_character(name, what)


def check_no_control_character(text: str, what: str) -> None:
    control = next((c for c in text if ord(c) < 0x20 or ord(c) == 0x7F), None)
    if control is not None:  # XML 1.0 cannot hold most of them: CVAT's and Label Studio's files would not parse
        raise SourceError(f"{what} {text!r} holds the control character {control!r}, which file names and the "
                          "annotation tools' XML cannot carry; export needs ids and labels that are plain names")
