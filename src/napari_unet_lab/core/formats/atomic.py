"""Writing files so that a crash or an error never leaves a half-written file."""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


def write_atomically(
    path: str | os.PathLike, write: Callable[[BinaryIO], object], *, overwrite: bool = False
) -> Path:
    """Write a file through `write`, publishing it at `path` only once it is complete.

    Parameters
    ----------
    path : str or path-like
        Destination; its folder must exist.
    write : callable
        Called with a binary file open for writing.
    overwrite : bool
        Replace an existing file. Without it an existing file is never touched.

    Returns
    -------
    Path
        The path written.

    Raises
    ------
    FileExistsError
        If `path` exists and `overwrite` is false.

    Notes
    -----
    The data go to a hidden temporary file in the same folder, are flushed to
    disk, and only then renamed to `path`, so `path` holds the old file or the
    complete new one, never a part. On an error the temporary file is removed.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(_exists_message(path))
    temporary = _create_temporary_beside(path)
    try:
        with temporary.open("r+b") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        _publish(temporary, path, overwrite=overwrite)
    finally:
        # After a successful replace this is a no-op; after a link or an error it cleans up.
        temporary.unlink(missing_ok=True)
    _fsync_folder(path.parent)
    return path


def _exists_message(path: Path) -> str:
    return f"{path} already exists; pass overwrite=True to replace it."


def _create_temporary_beside(path: Path) -> Path:
    # Same folder, so the final move is a rename on one file system (atomic).
    # os.open with mode 0o666 lets the umask decide permissions, as for any new file.
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            os.close(os.open(temporary, flags, 0o666))
        except FileExistsError:
            continue
        return temporary
    raise FileExistsError(f"Could not create a temporary file next to {path}.")


def _publish(temporary: Path, path: Path, *, overwrite: bool) -> None:
    if overwrite:
        os.replace(temporary, path)
        return
    # A hard link fails if `path` appeared meanwhile, so no file is ever replaced silently.
    try:
        os.link(temporary, path)
    except FileExistsError:
        raise FileExistsError(_exists_message(path)) from None
    except OSError:
        # File systems without hard links (FAT, some network shares): check, then rename.
        if path.exists():
            raise FileExistsError(_exists_message(path)) from None
        os.replace(temporary, path)


def _fsync_folder(folder: Path) -> None:
    # Makes the rename itself durable; not possible (nor needed) on Windows.
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


@contextmanager
def folder_written_atomically(
    path: str | os.PathLike, *, overwrite: bool = False
) -> Iterator[Path]:
    """Fill a folder (a zarr store, say) and publish it at `path` only once it is complete.

    Parameters
    ----------
    path : str or path-like
        Destination folder; its parent must exist.
    overwrite : bool
        Replace an existing folder or file. Without it nothing existing is touched.

    Yields
    ------
    Path
        An empty hidden folder beside `path` to write into.

    Raises
    ------
    FileExistsError
        If `path` exists and `overwrite` is false.

    Notes
    -----
    On leaving the ``with`` block normally, the folder is renamed to `path` (one
    rename on one file system); on an error, or when a generator writing it is
    closed, it is removed, so `path` never holds a half-written store. With
    `overwrite`, the old folder is first moved aside and deleted after the
    rename: for that moment `path` does not exist.
    """
    path = Path(path)
    if _exists(path) and not overwrite:
        raise FileExistsError(_exists_message(path))
    temporary = _beside(path, "tmp")
    temporary.mkdir()
    try:
        yield temporary
        _publish_folder(temporary, path, overwrite=overwrite)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    _fsync_folder(path.parent)


def _exists(path: Path) -> bool:
    return path.exists() or path.is_symlink()


def _beside(path: Path, kind: str) -> Path:
    for _ in range(100):
        candidate = path.with_name(f".{path.name}.{secrets.token_hex(4)}.{kind}")
        if not _exists(candidate):
            return candidate
    raise FileExistsError(f"Could not create a temporary folder next to {path}.")


def _publish_folder(temporary: Path, path: Path, *, overwrite: bool) -> None:
    old = None
    if _exists(path):
        if not overwrite:
            raise FileExistsError(_exists_message(path))
        old = _beside(path, "old")
        os.rename(path, old)
    try:
        # rename() replaces an empty folder that appeared meanwhile, but fails on anything else
        os.rename(temporary, path)
    except OSError as error:
        if old is not None:
            os.rename(old, path)
        if _exists(path):
            raise FileExistsError(_exists_message(path)) from error
        raise
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old)
        else:
            old.unlink()
