"""A run directory: held by one run at a time (`claim`), its logs (metrics.jsonl, one JSON
object per line, and TensorBoard scalars), the spec copy, and what a resumed run keeps of an
earlier one's."""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path

from nnc.diagnostics import EXIT_USAGE, NncError
from nnc.files import folder_lock, make_dir


def _records(path: Path) -> list[dict]:
    """metrics.jsonl's records; a line a crash cut short (the last one) is not a record."""
    out = []
    for line in path.read_text(errors="replace").splitlines() if path.is_file() else ():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return [r for r in out if isinstance(r, dict)]


def holds_run(path: Path) -> bool:
    """A checkpoint, or a finished epoch in metrics.jsonl: a run another must not land on. A
    folder a run left before its first checkpoint holds nothing worth keeping."""
    if (path / "last.safetensors").exists() or (path / "best.safetensors").exists():
        return True
    return any("train_loss" in r for r in _records(path / "metrics.jsonl"))


def fresh_error(out: Path) -> NncError:
    return NncError(f"--out {out} holds a run already: continue it with `nnc train --resume {out}`, "
                    "or choose another --out (nothing was written)", exit_code=EXIT_USAGE)


@contextlib.contextmanager
def claim(out: Path, continuing: bool):
    """The run directory for the run's life: created, locked (a second `nnc train` into it is
    refused, however close together they start), checked under the lock to hold no run unless
    `continuing` one there, and cleared of the temp files of checkpoints a killed run was
    writing. A run that fails before its first checkpoint leaves no folder it created behind."""
    make_dir(out.parent, "run directory")
    try:
        out.mkdir()  # made here, by this process (of two that start together, only one makes it)
        created = True
    except OSError:
        created = False
    make_dir(out, "run directory")  # (says what is wrong, if something is)
    with folder_lock(out, "nnc train", "give another --out"):
        try:
            if not continuing and holds_run(out):
                raise fresh_error(out)
            for tmp in out.glob(".*.tmp"):  # nnc.files.write_atomic's, left by a kill
                tmp.unlink(missing_ok=True)
            yield
        except BaseException:
            if created and not (out / "last.safetensors").exists():
                shutil.rmtree(out, ignore_errors=True)
            raise


class MetricsLog:
    """metrics.jsonl and TensorBoard scalars (TensorBoard imported at its first scalar)."""

    def __init__(self, out: Path, resume: bool):
        self.path = out / "metrics.jsonl"
        self.file = open(self.path, "a" if resume else "w")  # noqa: SIM115 (open for the run's life)
        self._tb = None
        self.out = out

    @property
    def tb(self):
        if self._tb is None:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.out / "tensorboard"))
        return self._tb

    def write(self, record: dict, tb_step: int | None = None) -> None:
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if tb_step is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("epoch", "step"):
                    self.tb.add_scalar(k, v, tb_step)

    def close(self) -> None:
        self.file.close()
        if self._tb is not None:
            self._tb.close()


def write_spec_copy(out: Path, text: str, overrides: tuple[str, ...]) -> None:
    """spec.nnspec: the spec as trained, headed by the --set overrides it ran with."""
    applied = "".join(f" --set {o}" for o in overrides)
    header = f"# nnc train applied:{applied} (rerun with them to reproduce this run)\n" if applied else ""
    (out / "spec.nnspec").write_text(header + text)


def continue_outputs(src: Path, out: Path, epochs: int) -> None:
    """A resumed run's metrics.jsonl holds exactly the epochs its checkpoint has seen: records a
    killed run wrote after its last checkpoint (a partial epoch, a `final` line) are dropped, and
    a run continued into another directory takes the history and `best` along."""
    kept = [r for r in _records(src / "metrics.jsonl") if r.get("epoch", 0) <= epochs and "final" not in r]
    (out / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kept))
    if src.resolve() != out.resolve() and (src / "best.safetensors").is_file():
        shutil.copyfile(src / "best.safetensors", out / "best.safetensors")
