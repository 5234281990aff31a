"""A file given as a model (or as backbone weights) that is not a PyTorch checkpoint at all (random bytes, text, an
empty file, a checkpoint cut short, another zip archive) is named as such: not as a file that "holds Python
objects", which is what torch.load's unpickling error made egal say of it."""
import os
import zipfile

import pytest

torch = pytest.importorskip("torch")

from egal.models import ModelFileError, build_model, load_model  # noqa: E402
from pools import save_tiny_model  # noqa: E402

NOT_A_CHECKPOINT = "is not a PyTorch checkpoint egal can read: "


def _garbage(tmp_path, kind: str) -> str:
    path = tmp_path / f"{kind}.pt"
    if kind == "random":
        path.write_bytes(os.urandom(4096))
    elif kind == "text":
        path.write_text("model weights: see the shared drive\n")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "pickle":
        path.write_bytes(b"\x80\x04\x95\x0b\x00\x00\x00\x00\x00\x00\x00}\x94\x8c\x01a\x94K\x01s.")  # {'a': 1}
    elif kind == "zip":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("notes.txt", "not a model")
    return str(path)


@pytest.mark.parametrize(("kind", "reason"), [
    ("random", "it holds bytes of another kind, not the zip archive that torch.save writes"),
    ("pickle", "it holds bytes of another kind, not the zip archive that torch.save writes"),
    ("text", "it holds text, not the zip archive that torch.save writes"),
    ("empty", "it is empty (0 bytes)"),
    ("zip", "it is a zip archive, but not one that torch.save wrote (it holds no data.pkl)"),
])
def test_a_file_that_is_no_checkpoint_is_named_so(tmp_path, kind, reason):
    path = _garbage(tmp_path, kind)
    with pytest.raises(ModelFileError) as caught:
        load_model(path)
    assert str(caught.value).startswith(f"{path!r} {NOT_A_CHECKPOINT}{reason}"), caught.value
    assert "Python objects" not in str(caught.value)


@pytest.mark.parametrize("kept", [3, 100, 0.5, -22])  # bytes kept of a real model file (a fraction of it; all but)
def test_a_checkpoint_cut_short_is_named_so(tmp_path, kept):
    whole = open(save_tiny_model(tmp_path / "whole.pt"), "rb").read()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(whole[:int(len(whole) * kept) if isinstance(kept, float) else kept])
    with pytest.raises(ModelFileError) as caught:
        load_model(cut)
    assert f"{NOT_A_CHECKPOINT}it is cut short or damaged" in str(caught.value), caught.value


def test_a_checkpoint_holding_foreign_objects_still_says_so(tmp_path):
    torch.save({"format": object()}, tmp_path / "objects.pt")
    with pytest.raises(ModelFileError, match="it holds Python objects, which a safe load does not unpickle"):
        load_model(tmp_path / "objects.pt")


def test_the_command_line_says_it_in_one_line(tmp_path, capsys):
    from egal.cli import main

    path = _garbage(tmp_path, "random")
    assert main(["export", "--model", path, "--out", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert err == f"egal export: error: {path!r} {NOT_A_CHECKPOINT}it holds bytes of another kind, not the zip " \
                  "archive that torch.save writes; a model file is what egal train (egal.models.save_model) writes\n"


def test_a_weights_file_that_is_no_checkpoint_is_named_so(tmp_path):
    from egal.errors import EgalError

    path = _garbage(tmp_path, "text")
    with pytest.raises(EgalError) as caught:
        build_model("resnet18", "linear", ["a", "b"], weights=path)
    assert str(caught.value) == (f"weights file {path!r} {NOT_A_CHECKPOINT}it holds text, not the zip archive that "
                                 "torch.save writes")
