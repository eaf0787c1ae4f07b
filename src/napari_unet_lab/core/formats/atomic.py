"""Writing files so that a crash or an error never leaves a half-written file (or pair)."""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Callable, Iterator, Sequence
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


def write_all_or_none(
    writes: Sequence[tuple[str | os.PathLike, Callable[[BinaryIO], object]]],
    *,
    overwrite: bool = False,
) -> list[Path]:
    """Write several files that belong together: afterwards all are new, or none is.

    Parameters
    ----------
    writes : sequence of (path, write)
        Each file's destination (its folder must exist) and a callable writing
        its content to a binary file. Files are published in this order, so
        put last the one that tells readers the others are complete.
    overwrite : bool
        Replace existing files. Without it no existing file is ever touched.

    Returns
    -------
    list of Path
        The paths written.

    Raises
    ------
    FileExistsError
        If one of the paths exists and `overwrite` is false.

    Notes
    -----
    Every file is first written completely to a hidden temporary file beside
    its destination and flushed to disk, so a full disk or any error while
    writing leaves the destinations untouched. Only then are the files renamed
    into place one by one; a replaced file is kept (as a hard link) until all
    are in place, and if a rename fails the files already published are taken
    back and the old ones restored. A power cut during those renames can still
    leave the first files new and the last ones old: which is why the last file
    should be the one that says the others are complete.
    """
    paths = [Path(path) for path, _ in writes]
    if not overwrite:
        for path in paths:
            if path.exists():
                raise FileExistsError(_exists_message(path))
    temporaries: list[Path] = []
    published: list[tuple[Path, Path | None]] = []  # (path, the old file kept aside or None)
    try:
        for path, (_, write) in zip(paths, writes, strict=True):
            temporaries.append(_create_temporary_beside(path))
            with temporaries[-1].open("r+b") as file:
                write(file)
                file.flush()
                os.fsync(file.fileno())
        for path, temporary in zip(paths, temporaries, strict=True):
            kept = _keep_aside(path) if overwrite else None
            try:
                _publish(temporary, path, overwrite=overwrite)
            except BaseException:
                if kept is not None:
                    kept.unlink(missing_ok=True)  # `path` was not replaced: still the old file
                raise
            published.append((path, kept))
    except BaseException:
        for path, kept in reversed(published):
            _take_back(path, kept)
        raise
    finally:
        for temporary in temporaries:
            temporary.unlink(missing_ok=True)
    for _, kept in published:
        if kept is not None:
            kept.unlink(missing_ok=True)
    for folder in {path.parent for path in paths}:
        _fsync_folder(folder)
    return paths


def _keep_aside(path: Path) -> Path | None:
    """Keep an existing file under a hidden name beside it, until the new one is in place."""
    if not path.is_file():
        return None
    kept = _beside(path, "old")
    try:
        os.link(path, kept)  # a second name for the same file: instant, no copy
    except OSError:
        shutil.copy2(path, kept)  # file systems without hard links
    return kept


def _take_back(path: Path, kept: Path | None) -> None:
    """Undo publishing `path`: restore the old file, or remove the new one."""
    try:
        if kept is not None:
            os.replace(kept, path)
        else:
            path.unlink(missing_ok=True)
    except OSError:
        pass  # the original error matters more; nothing else can be done here


def _exists_message(path: Path) -> str:
    return f"the file {path} already exists; pass overwrite=True to replace it."


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
