"""Writing the files a user keeps (checkpoints, ONNX models, run folders): whole or not at all,
and an OS error said as the user's error."""

from __future__ import annotations

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
