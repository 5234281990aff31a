"""Ids and class names printed on a terminal show their control characters escaped (egal._display): an escape
sequence in a pool's id or label reached stdout as it was, where a terminal acts on it."""
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from egal._display import shown
from egal.commands.score import print_selection
from egal.importers import add_labels, pool_info
from egal.pool.encode import encode_png
from pool_import_sources import write_csv

CLIPBOARD = "\x1b]52;c;Y3VybCBldmlsLnNo\x07"  # OSC 52: a terminal that allows it puts the text on the clipboard
RED = "\x1b[31m"


def test_shown_escapes_control_characters_and_keeps_every_other_character():
    assert shown("scan" + CLIPBOARD) == "scan\\x1b]52;c;Y3VybCBldmlsLnNo\\x07"
    assert shown("Méningiome 脑膜瘤 a b") == "Méningiome 脑膜瘤 a b"
    assert shown(7) == "7" and shown(None) == "None"


def test_the_selection_table_pool_info_and_add_labels_print_no_control_character(tmp_path, capsys):
    ids = ["scan" + CLIPBOARD, "plain"]
    print_selection(pa.table({"rank": [1, 2], "id": ids, "score": [0.9, 0.8], "entropy_norm": [0.5, 0.5],
                              "misalignment": [0.7, None], "pred": [RED + "glioma", "glioma"]}))
    pool = tmp_path / "pool.parquet"
    pq.write_table(pa.Table.from_pylist([{"id": i, "image": encode_png(np.zeros((8, 8), np.uint8)),
                                          "label": RED + "glioma" if k == 0 else None}
                                         for k, i in enumerate(ids)]), pool)
    print(pool_info(pool, progress=False).summary())
    labels = write_csv(tmp_path / "labels.csv", ["id", "label"], [["plain", RED + "glioma"]])
    print(add_labels(pool, labels, tmp_path / "out.parquet").summary())
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out
    assert "scan\\x1b]52;c;Y3VybCBldmlsLnNo\\x07" in out and "\\x1b[31mglioma" in out
