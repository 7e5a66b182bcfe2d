"""Atomic writes: a killed process leaves either the old file/directory or the new one, never half of one;
and the write lock of a directory (`index_lock`; fcntl's `flock`, as SQLite and pip's caches lock: the OS
frees it when its holder dies, so a killed writer never leaves it stuck)."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_LOCKS: dict[str, threading.RLock] = {}
_LOCKS_GUARD = threading.Lock()
_HELD: dict[str, tuple[int, int]] = {}  # lock file -> (fd, depth) while this process holds it


@contextlib.contextmanager
def index_lock(path: str | Path) -> Iterator[None]:
    """Hold the exclusive write lock on directory `path`, waiting for it: an advisory `flock` on the file
    `.NAME.lock` beside it (beside, not inside, as a replaced directory is swapped out whole), and a lock
    per thread within this process. Re-entrant in the thread that holds it, so a command can hold it around
    load, change and save while the save takes it again."""
    import fcntl

    path = Path(path).absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    name = str(path.parent / f".{path.name}.lock")
    with _LOCKS_GUARD:
        local = _LOCKS.setdefault(name, threading.RLock())
    with local:
        fd, depth = _HELD.get(name, (-1, 0))
        if depth == 0:
            fd = os.open(name, os.O_RDWR | os.O_CREAT, 0o666 & ~_umask())
            fcntl.flock(fd, fcntl.LOCK_EX)
        _HELD[name] = (fd, depth + 1)
        try:
            yield
        finally:
            if depth == 0:
                del _HELD[name]
                os.close(fd)  # releases the flock
            else:
                _HELD[name] = (fd, depth)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_file(path: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[Any]:
    """Open a temp file next to `path`; on clean exit fsync it and rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        kwargs: dict[str, Any] = {} if "b" in mode else {"encoding": encoding}
        with open(tmp, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json_atomic(path: str | Path, obj: Any) -> None:
    with atomic_file(path) as fh:
        json.dump(obj, fh, indent=2, ensure_ascii=False)
        fh.write("\n")


@contextlib.contextmanager
def atomic_new_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temp directory beside `path`; on clean exit it replaces `path` (which may exist)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700 directories
        yield tmp
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.rmdir(old)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def save_npy(path: str | Path, array: Any) -> None:
    """An array as `.npy` (no pickles), atomically and fsynced."""
    import numpy as np

    with atomic_file(path, "wb") as fh:
        np.save(fh, np.ascontiguousarray(array), allow_pickle=False)


def load_npy(path: str | Path, mmap_mode: str | None) -> Any:
    """An `.npy` array (memory-mapped with `mmap_mode`); a truncated or corrupt file is a clear error."""
    import numpy as np

    from mbret.errors import IndexFormatError

    try:
        return np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise IndexFormatError(f"{path}: truncated or corrupt array file ({exc})") from None


def restore_interrupted_swap(path: str | Path) -> bool:
    """Put back the previous directory if a writer was killed inside `atomic_new_dir`'s swap, after moving
    `path` aside and before moving the new one in (the one moment `path` is missing). Under `path`'s
    lock, so a swap in progress finishes first. Returns whether it restored one."""
    path = Path(path)
    if path.exists() or not path.parent.is_dir():
        return False
    pattern = f".{glob.escape(path.name)}.*.old"
    if not any(path.parent.glob(pattern)):
        return False
    with index_lock(path):
        olds = sorted(path.parent.glob(pattern), key=lambda p: p.stat().st_mtime)
        if path.exists() or not olds:
            return False
        os.replace(olds[-1], path)
        _fsync_dir(path.parent)
        return True
