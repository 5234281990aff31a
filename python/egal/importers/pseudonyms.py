"""Pseudonymised exports: every id replaced by a random pseudonym in what an export holds, and the key back.

Pool ids often embed a patient identifier (an MRN, an accession number), and an export goes to annotators outside
the hospital. With a key file named (export_selection(pseudonym_key=...), --pseudonym-key), export-selection writes
each exported row under a pseudonym instead of its id (file names, selection.csv, tasks.json, annotations.xml), and
writes the pseudonym -> id key to that file, which must lie outside the export and stays with whoever exported;
add-labels takes the key to map the annotators' labels back to the pool's ids.

A pseudonym is PSEUDONYM_PREFIX and 24 characters of lowercase base32 (120 bits from `secrets`): drawn at random,
never derived from the id (a hash of an MRN could be recomputed from a list of MRNs), never two alike in one export,
a valid file name everywhere and recognisable, so that add-labels refuses an export's labels given without their key
by saying which option is missing.

The key is a CSV, `pseudonym,id` (ids written for spreadsheets, egal._spreadsheet), written atomically with mode
0600 whatever the umask. It is never replaced silently: an existing file is replaced only with overwrite, only if it
is a key, and only if it is the key of the export that --out replaces (the same pseudonyms as that export's
selection.csv); any other key may still be needed for labels yet to come back.
"""
from __future__ import annotations

import base64
import csv
import os
import re
import secrets
from pathlib import Path

from .._atomic import remove_stale_temporaries, stale_temporaries, temporary_path
from .._checks import bad_argument
from .._paths import check_new_file, check_replaceable, starts_with_header
from .._spreadsheet import from_spreadsheet_text, spreadsheet_text
from ..errors import EgalError
from ..pool.errors import MAX_LISTED_ROWS
from ..selection.csv_file import SELECTION_COLUMNS
from .errors import SourceError
from .writer import hold

PSEUDONYM_PREFIX = "egal-"
PSEUDONYM_BYTES = 15  # 120 random bits: 24 base32 characters, no padding
_PSEUDONYM = re.compile(re.escape(PSEUDONYM_PREFIX) + "[a-z2-7]{24}")
KEY_COLUMNS = ("pseudonym", "id")
KEY_MODE = 0o600  # the key names the patients behind the pseudonyms: its owner's alone
# The selection's columns a pseudonymised export keeps: egal score's own, scores and the predicted class. Any other (a
# group column, which is a patient or study id; a hand-made list's columns) may identify a patient and is left out.
KEPT_SELECTION_COLUMNS = tuple(c for c in SELECTION_COLUMNS if c != "id")
ARGUMENT = "pseudonym_key"


def new_pseudonym() -> str:
    return PSEUDONYM_PREFIX + base64.b32encode(secrets.token_bytes(PSEUDONYM_BYTES)).decode("ascii").lower()


def is_pseudonym(text: str) -> bool:
    return _PSEUDONYM.fullmatch(text) is not None


class Pseudonyms:
    """The pseudonyms of one export: each id's drawn when first asked for, never two alike."""

    def __init__(self):
        self.of: dict[str, str] = {}  # id -> pseudonym
        self._taken: set[str] = set()

    def __call__(self, ident: str) -> str:
        if ident not in self.of:
            pseudonym = new_pseudonym()
            while pseudonym in self._taken:  # 120 random bits: never in practice, but never is the rule
                pseudonym = new_pseudonym()
            self._taken.add(pseudonym)
            self.of[ident] = pseudonym
        return self.of[ident]


def _refused(problem: str) -> SourceError:
    """An error about the key file, naming the argument (the command line names its flag instead)."""
    return bad_argument(SourceError, ARGUMENT, problem)


def is_key_file(path) -> bool:
    """A pseudonym key that egal wrote (what overwrite may replace with another)."""
    return starts_with_header(path, KEY_COLUMNS)


def check_key_path(key, out: Path, overwrite: bool, selection_ids) -> Path:
    """Where export-selection may write the key, checked before any export: outside the export folder `out`, in a
    folder that exists, not a link, and new, or (with overwrite) the key of the export at `out` that is replaced,
    whose selection.csv ids `selection_ids` gives (a callable: out's ids, or an empty set when it holds none)."""
    if not isinstance(key, (str, os.PathLike)) or not os.fspath(key).strip():
        raise _refused(f"must name the file to write the pseudonym -> id key to (outside the export), got {key!r}")
    path = Path(key).expanduser()
    if path.is_symlink():  # replacing it would replace the link, and a link could lead into the export
        raise _refused(f"{str(path)!r} is a symbolic link: name the file itself ({str(path.resolve())!r})")
    export = out.resolve()
    if path.resolve() == export or export in path.resolve().parents:
        raise _refused(f"{str(path)!r} lies inside the export folder --out {str(out)!r}, which goes to the "
                       "annotators: the key maps its pseudonyms back to the pool's ids and must stay with you; name a "
                       "file outside it")
    _refuse_a_key_left_by_a_killed_run(path, out, selection_ids)
    try:
        check_replaceable(path, ARGUMENT, is_key_file, "a pseudonym key egal wrote (a CSV pseudonym,id)")
        if path.is_file() and set(read_key(path)) != selection_ids():
            raise _refused(f"{str(path)!r} is the key of another export than the one at --out {str(out)!r} (its "
                           "pseudonyms are not that export's): the labels of that export would no longer map back to "
                           "the pool's ids, so it is never replaced, overwrite or not; name a new key file")
        check_new_file(path, ARGUMENT, replace=overwrite)
    except SourceError:
        raise
    except EgalError as exc:
        raise _refused(str(exc).removeprefix(f"{ARGUMENT} ")) from None
    return path


def _refuse_a_key_left_by_a_killed_run(path: Path, out: Path, selection_ids) -> None:
    """A run killed after its export was in place and before its key was leaves the only copy of that key under its
    temporary name. Such a copy (one that reads as a whole key) is never deleted: refused here, naming it, until the
    user moves it where it belongs. Ones that are no key (half-written) are removed (claim_key_path)."""
    for copy in stale_temporaries(path):
        pseudonyms = _pseudonyms_in(copy)
        if not pseudonyms:
            continue
        if pseudonyms == selection_ids():
            there = " (in place of the file there)" if path.exists() else ""
            raise _refused(f"{str(path)!r} is not the key of the export at --out {str(out)!r}: a run was killed after "
                           f"writing that export and before moving its key into place, which is kept as {copy!r}, "
                           f"its only copy: move it to {str(path)!r}{there}, then run again. Nothing was written")
        raise _refused(f"{str(path)!r}: a run killed while writing it left a key as {copy!r}, which is not the "
                       f"key of the export at --out {str(out)!r}: if another export lists its pseudonyms (in its "
                       "selection.csv), move it to a key file of that export's; if none does (the run was killed "
                       "before its export was in place), delete it. Nothing was written")


def _pseudonyms_in(path) -> set[str]:
    """The pseudonyms of a key file; none for a file that is not a whole key (a half-written one)."""
    try:
        return set(read_key(path))
    except (SourceError, OSError):
        return set()


def claim_key_path(key, out: Path, overwrite: bool, selection_ids):
    """check_key_path's key, held for this export (importers.writer.hold): locked against another egal writing it,
    checked again under the lock, and published without replacing a key that appeared meanwhile. The half-written
    keys of killed runs are removed (whole ones are refused by check_key_path, never removed)."""
    claim = hold(lambda: check_key_path(key, out, overwrite, selection_ids), overwrite, ARGUMENT,
                 lambda message: _refused(message.removeprefix(f"{ARGUMENT} ")), keep_mode=False)  # KEY_MODE always
    remove_stale_temporaries(claim.out, keep=_pseudonyms_in)
    return claim


def write_key(path: Path, pairs) -> Path:
    """Writes the key [(pseudonym, id), ...] to a temporary file beside `path`, mode 0600, flushed to disk, and
    returns that file: the caller publishes it (claim_key_path) once the export is in place."""
    tmp = Path(temporary_path(path, hidden=True))
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, KEY_MODE)
    try:
        os.chmod(tmp, KEY_MODE)  # whatever the umask let os.open give
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(KEY_COLUMNS)
            writer.writerows((pseudonym, spreadsheet_text(ident)) for pseudonym, ident in pairs)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def read_key(path) -> dict[str, str]:
    """{pseudonym: id} of a key that write_key wrote; SourceError naming the file (and line) when it is not one."""
    what = f"the pseudonym key {str(path)!r}"
    if not Path(path).is_file():
        raise _refused(f"{str(path)!r} does not exist (the key file export-selection wrote with --pseudonym-key)")
    key: dict[str, str] = {}
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            if next(reader, None) != list(KEY_COLUMNS):
                raise SourceError(f"{what} is not a key that export-selection wrote: its first line is not "
                                  f"{','.join(KEY_COLUMNS)}")
            for row in reader:
                if len(row) != 2 or not is_pseudonym(row[0]):
                    raise SourceError(f"{what} line {reader.line_num} is not a pseudonym and its id ({row!r})")
                if row[0] in key:
                    raise SourceError(f"{what} gives the pseudonym {row[0]!r} twice (line {reader.line_num})")
                key[row[0]] = from_spreadsheet_text(row[1])
    except (UnicodeDecodeError, csv.Error) as exc:
        raise SourceError(f"{what} cannot be read: {exc}") from None
    if len(set(key.values())) != len(key):
        raise SourceError(f"{what} gives one id two pseudonyms: it is not a key that export-selection wrote")
    return key


def ids_of_pseudonyms(given: dict, key: dict[str, str], key_path, labels) -> dict:
    """`given` ({pseudonym: label}, from the annotators) by the pool's ids; SourceError naming the pseudonyms that
    the key does not hold (labels of another export, or another export's key)."""
    missing = [p for p in given if p not in key]
    if missing:
        raise SourceError(f"labels {str(labels)!r} names {len(missing)} id(s) that are not pseudonyms of the key "
                          f"{str(key_path)!r}: {_listed(missing)} (labels of another export, or the key of another "
                          "one?)")
    return {key[p]: label for p, label in given.items()}


def check_key_ids_in_pool(key: dict[str, str], in_pool: dict[str, str], key_path, pool) -> None:
    """SourceError when ids of the key are not in the pool (in_pool: pool_ids_of the key's ids): the key of an export
    of another pool."""
    missing = [ident for ident in key.values() if ident not in in_pool]
    if missing:
        raise SourceError(f"the pseudonym key {str(key_path)!r} maps {len(missing)} pseudonym(s) to ids that are not "
                          f"in the pool {str(pool)!r}: {_listed(missing)} (the key of an export of another pool?)")


def missing_key_error(pseudonyms: list[str], labels) -> SourceError:
    """The error for labels whose ids are an export's pseudonyms, given without the key."""
    return SourceError(f"labels {str(labels)!r} names {len(pseudonyms)} id(s) that are pseudonyms of an export made "
                       f"with --pseudonym-key, not ids of the pool: {_listed(pseudonyms)}; pass the key file that "
                       "export wrote, pseudonym_key=KEY (--pseudonym-key KEY), to map them back to the pool's ids")


def _listed(items: list[str]) -> str:
    more = f" and {len(items) - MAX_LISTED_ROWS} more" if len(items) > MAX_LISTED_ROWS else ""
    return ", ".join(map(repr, items[:MAX_LISTED_ROWS])) + more
