"""egal._atomic's rules, which every writer of egal uses: a rename that never replaces, the lock on an output, and
(tests/test_pool_write_races.py) what they give the commands."""
from __future__ import annotations

import os
import threading

import pytest

import egal._atomic as atomic
from egal._atomic import DestinationError, OutputLock, lock_path, publish, rename_no_replace


@pytest.fixture(params=["renameat2", "link", "check"])
def way(request, monkeypatch):
    """rename_no_replace as Linux does it (renameat2), as a system without renameat2 does (a hard link for a file),
    and as one without hard links either does (a check, then the rename)."""
    if request.param != "renameat2":
        monkeypatch.setattr(atomic, "_libc_renameat2", lambda: None)
    if request.param == "check":
        def no_links(src, dst):
            raise PermissionError(1, "Operation not permitted")

        monkeypatch.setattr(os, "link", no_links)
    return request.param


def test_a_rename_that_never_replaces_a_file_a_folder_or_an_empty_folder(tmp_path, way):
    for kind in ("file", "folder"):
        new = tmp_path / f"new-{kind}"
        new.mkdir() if kind == "folder" else new.write_text("new")
        for there in ("file", "folder", "empty folder", "link"):
            dst = tmp_path / f"{kind}-onto-{there}".replace(" ", "-")
            if there == "file":
                dst.write_text("theirs")
            elif there == "link":
                dst.symlink_to(tmp_path / "nowhere")
            else:
                dst.mkdir()
                if there == "folder":
                    (dst / "theirs").write_text("theirs")
            with pytest.raises(FileExistsError):
                rename_no_replace(new, dst)
            assert new.exists() and (dst.is_symlink() or dst.is_dir() == (there != "file"))
        rename_no_replace(new, tmp_path / f"{kind}-moved")
        assert not new.exists() and (tmp_path / f"{kind}-moved").exists()


def test_publish_refuses_what_appeared_and_replaces_only_when_asked(tmp_path):
    (tmp_path / "tmp").write_text("new")
    (tmp_path / "out").write_text("appeared")
    with pytest.raises(DestinationError, match=r"^--out '.*out' appeared while this run was writing it \(another "
                                               r"egal\?\): nothing written; choose another path, or run again with "
                                               r"overwrite=True \(--overwrite\) to replace it$"):
        publish(tmp_path / "tmp", tmp_path / "out", replace=False, what="--out")
    assert (tmp_path / "out").read_text() == "appeared" and (tmp_path / "tmp").exists()
    os.chmod(tmp_path / "out", 0o600)
    publish(tmp_path / "tmp", tmp_path / "out", replace=True, what="--out")
    assert (tmp_path / "out").read_text() == "new" and os.stat(tmp_path / "out").st_mode & 0o777 == 0o600


def test_a_second_writer_of_an_output_is_refused_until_the_first_releases_it(tmp_path):
    out = tmp_path / "pool.parquet"
    first = OutputLock(out, "--out")
    assert os.path.basename(lock_path(out)) == ".pool.parquet.lock"
    refused = []

    def second():  # another thread of this process: flock locks open files, not processes
        try:
            OutputLock(out, "--out")
        except DestinationError as exc:
            refused.append(str(exc))

    thread = threading.Thread(target=second)
    thread.start()
    thread.join()
    assert refused and refused[0].startswith(f"--out {str(out)!r} is being written by another egal now")
    first.release()
    assert not os.path.exists(lock_path(out))  # nothing left beside the output
    with OutputLock(out, "--out"):
        assert os.path.exists(lock_path(out))
    assert sorted(os.listdir(tmp_path)) == []


def test_only_the_temporaries_of_killed_runs_are_removed_and_kept_copies_are_returned(tmp_path):
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    dead, alive = child.pid, os.getpid()
    names = {f".x.parquet.tmp-{dead}-0123abcd": "removed", f"x.parquet.tmp-{dead}-0123abcd.npz": "removed",
             f".x.parquet.tmp-{dead}-4567abcd.old": "kept", f".x.parquet.tmp-{alive}-0123abcd": "a running writer's",
             f".y.parquet.tmp-{dead}-0123abcd": "another output's", f".x.parquet.tmp-{dead}-notarandom": "not ours",
             "x.parquet": "the output", ".x.parquet.lock": "the lock"}
    for name in names:
        (tmp_path / name).write_text("x")
    (tmp_path / f".x.parquet.tmp-{dead}-89abcdef").mkdir()  # a files folder, or an export
    (tmp_path / f".x.parquet.tmp-{dead}-89abcdef" / "image.png").write_text("x")
    assert atomic.stale_temporaries(tmp_path / "x.parquet") == sorted(
        str(tmp_path / n) for n in [*(n for n, what in names.items() if what in ("removed", "kept")),
                                    f".x.parquet.tmp-{dead}-89abcdef"])
    kept = atomic.remove_stale_temporaries(tmp_path / "x.parquet", keep=atomic.is_set_aside)
    assert kept == [str(tmp_path / f".x.parquet.tmp-{dead}-4567abcd.old")]
    assert sorted(os.listdir(tmp_path)) == sorted(n for n, what in names.items() if what != "removed")


@pytest.mark.parametrize("swap", [True, False])
def test_replace_folder_swaps_in_one_step_or_sets_the_old_one_aside(tmp_path, monkeypatch, swap):
    if not swap:
        monkeypatch.setattr(atomic, "_libc_renameat2", lambda: None)
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "a").write_text("new")
    (tmp_path / "out").mkdir(mode=0o700)
    (tmp_path / "out" / "a").write_text("old")
    old = atomic.replace_folder(tmp_path / "new", tmp_path / "out")
    assert (tmp_path / "out" / "a").read_text() == "new" and os.stat(tmp_path / "out").st_mode & 0o777 == 0o700
    assert open(os.path.join(old, "a")).read() == "old"
    assert os.path.basename(old).startswith(".out.tmp-" if not swap else "new")
    assert atomic.is_set_aside(old) != swap


def test_a_full_disk_is_said_of_the_file_being_written_not_of_its_temporary_name(tmp_path):
    import errno

    out = tmp_path / "seed0.pt"
    out.write_bytes(b"the earlier model")
    with pytest.raises(OSError) as caught:
        with atomic.replaced_atomically(out) as tmp:
            with open(tmp, "wb") as f:
                f.write(b"half")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), tmp)  # what a write to a full disk raises
    assert (caught.value.errno, caught.value.filename) == (errno.ENOSPC, str(out))
    assert out.read_bytes() == b"the earlier model" and os.listdir(tmp_path) == ["seed0.pt"]
    # Any other error keeps its own words: only a disk that cannot take the file is the file's business.
    with pytest.raises(PermissionError) as caught:
        with atomic.replaced_atomically(out) as tmp:
            raise PermissionError(errno.EACCES, "Permission denied", tmp)
    assert caught.value.filename == tmp
