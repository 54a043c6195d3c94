"""Writing the files a user keeps (checkpoints, ONNX models, run folders): whole or not at all,
and an OS error said as the user's error; one process at a time in a folder (`folder_lock`)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from nnc.diagnostics import NncError


def write_atomic(path: Path, data: bytes, what: str) -> None:
    """Temp file in the same folder, fsync, rename: a crash or a full disk never leaves half a
    `what` under `path`. An OS error is the user's (exit 1), named for `what`."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600; the user's other files follow the umask
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        if tmp:
            Path(tmp).unlink(missing_ok=True)
        raise NncError(f"{path}: cannot write the {what} ({e.strerror or e})") from None
    except BaseException:
        if tmp:
            Path(tmp).unlink(missing_ok=True)
        raise


def file_in_the_way(folder: Path) -> Path | None:
    """The file (if any) at `folder` or one of its parents, which makes `folder` impossible."""
    return next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)


def make_dir(path: Path, what: str) -> None:
    """mkdir -p, with a file in the way or a read-only place said as the user's error."""
    if (blocker := file_in_the_way(path)) is not None:
        raise NncError(f"cannot create the {what} {path}: {blocker} is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise NncError(f"cannot create the {what} {path}: {e.strerror or e}") from None


LOCK = ".lock"


@contextlib.contextmanager
def folder_lock(folder: Path, who: str, instead: str):
    """Hold FOLDER/.lock (an exclusive flock, which the kernel releases when the process dies,
    however it dies) for the block; it records the holder's pid. A second holder is refused at
    once: "another `who` is running in FOLDER (pid N); wait for it to end, or `instead`"."""
    import fcntl

    try:
        fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:  # a read-only file system, a folder without write permission
        raise NncError(f"cannot write in {folder}: {e.strerror or e}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise NncError(f"another {who} is running in {folder} (pid {pid}); wait for it to end, or {instead}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def lock_holder(folder: Path) -> str | None:
    """The pid recorded by a process that holds FOLDER/.lock now, else None."""
    import fcntl

    try:
        fd = os.open(folder / LOCK, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return None
    except BlockingIOError:
        return os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
    finally:
        os.close(fd)
