"""`egal train` on a disk that cannot take the model: one line naming --out (torch.save's failed write was a
RuntimeError, said as "unexpected pos 4288 vs 4184", exit status 2), the disk's exit status 1, the earlier model at
--out as it was and no partial file beside it."""
import os

import pytest

pytest.importorskip("torch")

from file_size_limit import egal_limited, python_limited  # noqa: E402
from pools import make_rows, save_tiny_model, write_pool  # noqa: E402

LIMIT = 20_000  # bytes: the pool is read, the model (about 100 kB) cannot be written
FAST = ["--architecture", "tiny_cnn", "--head", "linear", "--input-size", "32", "--epochs", "1", "--batch-size", "8",
        "--quiet"]


def test_a_model_the_disk_cannot_take_is_one_line_and_keeps_the_earlier_model(tmp_path):
    pool = write_pool(tmp_path / "pool.parquet", make_rows(24, folder=tmp_path, roi="boxes"))
    out = tmp_path / "model.pt"
    earlier = open(save_tiny_model(out, input_size=(32, 32)), "rb").read()
    before = sorted(os.listdir(tmp_path))
    done = egal_limited(LIMIT, "train", "--pool", pool, "--out", out, "--overwrite", *FAST)
    assert "Traceback" not in done.stderr and len(done.stderr.splitlines()) == 1, done.stderr
    assert done.stderr.startswith(f"egal train: error: --out {str(out)!r} could not be written (OSError: File too "
                                  "large: the file grew past the largest size this system allows"), done.stderr
    assert "), and holds the model it held before; " in done.stderr
    assert done.returncode == 1
    assert out.read_bytes() == earlier and sorted(os.listdir(tmp_path)) == before


def test_save_model_reports_a_failed_write_as_the_os_error_it_is(tmp_path):
    path = tmp_path / "model.pt"
    done = python_limited(LIMIT, "-c", f"""
import errno
from egal.models import build_model, save_model
try:
    save_model(build_model("tiny_cnn", "linear", ["a", "b"], input_size=(32, 32)), {str(path)!r})
except OSError as exc:
    print(errno.errorcode[exc.errno], exc.filename)
""")
    assert done.stdout == f"EFBIG {path}\n", done.stdout + done.stderr
