"""Reading files a checkpoint names (docs/language.md, "Reading files a checkpoint names").

A spec the user gives is theirs: nnc reads the files it names. A checkpoint is data that may come
from anyone, and the spec stored inside it names files too (its data source's paths, absolute or
with `..`): `nnc eval`, `nnc ensemble` and `nnc train --resume` read the data it names only when
the user names that data as well, in one of two ways:

- the spec file the checkpoint records (its `spec_name`) is on this machine and holds exactly the
  stored spec text: its data paths are the ones that file names (overrides stored with the
  checkpoint may not redirect them);
- `--allow-read PATH` names the file, or a folder above it.
"""

from __future__ import annotations

from pathlib import Path

from nnc.compiler.data_plan import located
from nnc.compiler.spec import Spec
from nnc.compiler.vocab.sources import SOURCES
from nnc.diagnostics import NncError

SPEC_LIMIT = 10 * 2**20  # a recorded spec file larger than this is not a spec (nor read)


def data_files(spec: Spec) -> list[tuple[str, Path]]:
    """(what, path) of every file or folder the spec's data source reads, located as training does."""
    src, params = spec.data.source, located(spec)
    return [(f"data {src.kind} {k}", Path(getattr(params, k))) for k in SOURCES[src.kind].paths
            if getattr(params, k) is not None]


def _named_by_its_spec_file(ck) -> set[Path]:
    """The data paths the recorded spec file names, when it holds the checkpoint's spec text."""
    from nnc.compiler.load import load_text

    p = Path(ck.spec_name)
    try:
        if not p.is_file() or p.stat().st_size > SPEC_LIMIT:
            return set()
        text = p.read_bytes().decode("utf-8-sig")
    except (OSError, UnicodeDecodeError):
        return set()
    if text != ck.spec_text:
        return set()
    try:
        return {path.resolve() for _, path in data_files(load_text(text, str(p)))}
    except NncError:
        return set()


def check_reads(ck, spec: Spec, allowed: tuple[str, ...] = ()) -> None:
    """Refuse (before anything is opened) a data path of checkpoint `ck`'s spec that the user has not named."""
    wanted = data_files(spec)
    if not wanted:
        return
    own = _named_by_its_spec_file(ck)
    roots = [Path(a).resolve() for a in allowed]
    for what, path in wanted:
        real = path.resolve()
        if real in own or any(real == r or r in real.parents for r in roots):
            continue
        recorded = Path(ck.spec_name)
        why = (f"its spec file {recorded} holds another text now" if recorded.is_file()
               else f"its spec file {recorded} is not on this machine")
        raise NncError(f"{ck.path}: its spec reads {what} {path}, and nnc reads a file a checkpoint names only when "
                       f"you name it too ({why}); if you trust the checkpoint, add --allow-read {path}")
