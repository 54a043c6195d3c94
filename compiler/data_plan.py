"""How a spec's data reaches training: held in memory (the fast path that makes small data sets
train at hand-written speed) or streamed from disk by worker processes (runtime/stream.py), for
data larger than memory.

`data ..., cache memory|stream` decides; `cache auto` (the default) streams a source that can be
streamed (imagefolder, npy, uncompressed npz) when its decoded size, times the training
processes on this machine, is over a quarter of the memory available; a quarter, because loading
into memory briefly holds the data two or three times over. `nnc show` and `nnc check` print the
choice and why; `nnc train` follows it. Standard library only: `nnc check` runs this.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from nnc.compiler.vocab.registry import Params
from nnc.compiler.vocab.sources import SOURCES, Extent
from nnc.diagnostics import Diagnostic, NncError

MEMORY_SHARE = 4  # stream when the data is over 1/MEMORY_SHARE of the available memory


@dataclass(frozen=True)
class DataPlan:
    """How the data will be held (memory or stream), and why."""

    cache: str  # "memory" or "stream"
    why: str
    extent: Extent | None


def located(spec) -> Params:
    """The source's parameters with the files it names located (relative ones beside the spec)."""
    src = spec.data.source
    d = SOURCES[src.kind]
    return src.params.model_copy(update={k: spec.locate(getattr(src.params, k), "data") for k in d.paths
                                         if getattr(src.params, k) is not None})


def plan(spec, processes: int = 1) -> DataPlan:
    """The path the data takes. Raises NncError when the source cannot be read or cannot be
    streamed as asked."""
    data, d = spec.data, SOURCES[spec.data.source.kind]
    if len(spec.model.inputs) > 1 or len(spec.model.outputs) > 1:
        if data.cache == "stream":
            raise NncError(Diagnostic("cache stream: a model of several inputs or outputs reads its arrays whole",
                                      spec.spans.get("data.cache", spec.spans.get("data")), spec.document,
                                      "use cache memory or auto"))
        return DataPlan("memory", "a model of several inputs or outputs reads its arrays whole", None)
    ext = d.extent(located(spec), spec.model.input.dims) if d.extent else None
    told = f"{ext.what}, {size(ext.nbytes)} as float32" if ext and ext.nbytes is not None else \
        ext.what if ext else f"{d.kind} is read whole"
    if data.cache == "memory":
        return DataPlan("memory", f"{told}; cache memory", ext)
    cannot = (ext.streams if ext else None) if d.streams else "it is read whole"
    if data.cache == "stream":
        if cannot:
            raise NncError(Diagnostic(f"cache stream: {d.kind} data cannot be streamed ({cannot})",
                                      spec.spans.get("data.cache", spec.spans.get("data")), spec.document,
                                      "imagefolder, npy and uncompressed npz sources stream; use cache memory or auto"))
        return DataPlan("stream", f"{told}; cache stream", ext)
    if cannot or ext is None or ext.nbytes is None:
        return DataPlan("memory", told + (f"; {cannot}" if cannot and ext else ""), ext)
    memory, where = available_memory()
    need = ext.nbytes * processes
    per = f" x {processes} processes" if processes > 1 else ""
    if need * MEMORY_SHARE > memory:
        return DataPlan("stream", f"{told}{per}: over 1/{MEMORY_SHARE} of the {size(memory)} {where}", ext)
    return DataPlan("memory", f"{told}{per}: within 1/{MEMORY_SHARE} of the {size(memory)} {where}", ext)


def try_plan(spec, processes: int = 1) -> DataPlan | str:
    """The plan, or why it cannot be made yet (the data cannot be read here), in one line."""
    try:
        return plan(spec, processes)
    except NncError as e:
        return e.diagnostics[0].message


def describe(spec, processes: int = 1, way: DataPlan | str | None = None) -> str:
    """One line for `nnc show` / `nnc check`: the path and why (or why it is not known yet).
    `way`: `try_plan`'s answer when the caller has it already (planning may list a folder)."""
    p = try_plan(spec, processes) if way is None else way
    if isinstance(p, str):
        return f"data: {p}"
    how = "in memory" if p.cache == "memory" else "streamed from disk by worker processes"
    return f"data: {how} ({p.why})"


def available_memory() -> tuple[int, str]:
    """(bytes, where the figure comes from): NNC_MEMORY when set (e.g. 512M, 4G: what nnc may
    assume, for a test or a shared machine), else the smaller of the kernel's MemAvailable and
    what the cgroup (a container's limit) leaves."""
    if os.environ.get("NNC_MEMORY"):
        return parse_bytes(os.environ["NNC_MEMORY"]), "set by NNC_MEMORY"
    found = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append((int(line.split()[1]) * 1024, "available"))
    except (OSError, ValueError):
        pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            used = int(Path("/sys/fs/cgroup/memory.current").read_text())
            found.append((max(int(limit) - used, 0), "left under the container's limit"))
    except (OSError, ValueError):
        pass
    return min(found) if found else (8 << 30, "assumed (the machine's memory is unknown)")


def parse_bytes(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*", text, re.I)
    if not m:
        raise NncError(f"NNC_MEMORY={text!r}: expected a size like 512M or 4G")
    return int(float(m.group(1)) * 1024 ** " KMGT".index(m.group(2).upper() or " "))


def size(n: float) -> str:
    """Bytes in binary units: `nnc show`'s memory estimate (compiler/footprint.py) and the data plan."""
    for unit, scale in (("TiB", 2 ** 40), ("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{int(n)} B"
