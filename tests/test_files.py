"""cutswap_lib.files: atomic writes keep the old file on an interrupt; a folder lock refuses a second run."""

import json
import os

import pytest

from cutswap_lib.files import FolderLock, FolderLockedError, atomic_write, atomic_write_text


def test_an_interrupted_write_leaves_the_old_file_intact(tmp_path):
    path = atomic_write_text(tmp_path / "results.csv", "old,rows\n")
    with pytest.raises(KeyboardInterrupt):
        with atomic_write(path) as fh:
            fh.write("new,half")
            raise KeyboardInterrupt  # Ctrl-C in the middle of writing
    assert path.read_text() == "old,rows\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.csv"]  # no temporary file left


def test_atomic_write_replaces_and_uses_unique_temporary_names(tmp_path):
    path = tmp_path / "sub" / "t.md"
    with atomic_write(path) as a, atomic_write(path) as b:  # two writers at once
        temporary = sorted(p.name for p in path.parent.iterdir())
        assert len(temporary) == 2 and all(n.startswith(".t.md.") and n.endswith(".tmp") for n in temporary)
        a.write("A")
        b.write("B")
    assert path.read_text() == "A"  # the last to finish wins, whole
    with atomic_write(path, "wb") as fh:
        fh.write(b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01"


def test_a_second_lock_on_the_same_folder_is_refused(tmp_path):
    with FolderLock(tmp_path, purpose="run one"):
        with pytest.raises(FolderLockedError, match="run one") as err:
            FolderLock(tmp_path).acquire()
        assert str(tmp_path) in str(err.value)
    FolderLock(tmp_path).acquire().release()  # free again after the first run ended
    assert not (tmp_path / ".lock").exists()


def test_a_lock_of_a_process_that_is_gone_is_taken_over(tmp_path):
    (tmp_path / ".lock").write_text(json.dumps({"pid": 2 ** 22 + 12345, "host": os.uname().nodename}))
    with pytest.warns(UserWarning, match="is gone"):
        lock = FolderLock(tmp_path).acquire()
    assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
    lock.release()


def test_atomic_write_gives_the_file_the_usual_mode_not_mkstemps_0600(tmp_path):
    import os
    path = atomic_write_text(tmp_path / "out.txt", "x")
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
