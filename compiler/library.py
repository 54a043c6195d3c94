"""The spec library that travels with the package (`nnc.specs`: the repository's specs/ folder,
installed as package data): its specs by name, and the rule that a command given a library
name reads the library's spec only where no such file exists, and says so."""

from __future__ import annotations

import sys
from functools import lru_cache
from importlib import resources
from pathlib import Path

SUFFIX = ".nnspec"


@lru_cache(maxsize=1)
def library() -> dict[str, str]:
    """Name (the file's stem) -> the path of the installed spec, sorted by name."""
    folder = resources.files("nnc.specs")
    found = {Path(f.name).stem: str(f) for f in folder.iterdir() if f.name.endswith(SUFFIX) and f.is_file()}
    return dict(sorted(found.items()))


def name_of(path: str) -> str | None:
    """The library name `path` may stand for: a bare name, with or without .nnspec."""
    if not path or "/" in path or "\\" in path or path.startswith("."):
        return None
    name = path[: -len(SUFFIX)] if path.endswith(SUFFIX) else path
    return name if name in library() else None


_said: set[str] = set()


def resolve(path: str) -> str:
    """`path` itself, or, when no such file exists and it names a library spec, that spec's path
    (said once on standard error, so that nobody mistakes whose file was read)."""
    if path == "-" or Path(path).exists():
        return path
    name = name_of(path)
    if name is None:
        return path
    found = library()[name]
    if path not in _said:
        _said.add(path)
        print(f"nnc: no file {path} here: reading the library's {name} ({found})", file=sys.stderr)
    return found


def description(text: str) -> str:
    """A spec's first sentence: its header comment, without asides in parentheses, up to the
    first full stop or colon."""
    import re

    head = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        head.append(line.lstrip("#").strip())
    words = " ".join(head)
    while (shorter := re.sub(r"\s*\([^()]*\)", "", words)) != words:
        words = shorter
    return re.split(r"[.:;](\s|$)", words)[0].strip()
