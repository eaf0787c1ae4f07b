"""Files that belong together are published together: all new, or none."""

import errno
import os

import pytest

from napari_unet_lab.core.formats.atomic import write_all_or_none


def _writing(data: bytes):
    return lambda file: file.write(data)


def _disk_full(file):
    file.write(b"half")
    raise OSError(errno.ENOSPC, "No space left on device")


def test_all_files_are_written_in_order(tmp_path):
    paths = write_all_or_none([(tmp_path / "a", _writing(b"1")), (tmp_path / "b", _writing(b"2"))])
    assert [p.read_bytes() for p in paths] == [b"1", b"2"]
    with pytest.raises(FileExistsError, match="already exists"):
        write_all_or_none([(tmp_path / "c", _writing(b"3")), (tmp_path / "b", _writing(b"4"))])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]  # "c" never written


@pytest.mark.parametrize("overwrite", [False, True])
def test_an_error_writing_the_last_file_publishes_none(tmp_path, overwrite):
    if overwrite:
        (tmp_path / "a").write_bytes(b"old a")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(OSError, match="No space left"):
        write_all_or_none(
            [(tmp_path / "a", _writing(b"new a")), (tmp_path / "b", _disk_full)],
            overwrite=overwrite,
        )
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_a_failed_rename_restores_the_files_already_replaced(tmp_path, monkeypatch):
    (tmp_path / "a").write_bytes(b"old a")
    (tmp_path / "b").write_bytes(b"old b")
    real_replace = os.replace

    def replace_but_not_b(source, target):
        if str(target).endswith("/b"):
            raise OSError(errno.EIO, "Input/output error")
        return real_replace(source, target)

    monkeypatch.setattr(os, "replace", replace_but_not_b)
    with pytest.raises(OSError, match="Input/output error"):
        write_all_or_none(
            [(tmp_path / "a", _writing(b"new a")), (tmp_path / "b", _writing(b"new b"))],
            overwrite=True,
        )
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == {"a": b"old a", "b": b"old b"}
