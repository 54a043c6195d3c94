"""A run directory's logs: metrics.jsonl (one JSON object per line), TensorBoard scalars, the
spec copy, and what a resumed run keeps of an earlier one's."""

from __future__ import annotations

import json
import shutil
from pathlib import Path


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
    records = src / "metrics.jsonl"
    lines = records.read_text().splitlines() if records.is_file() else []
    kept = [l for l in lines if l.strip() and (r := json.loads(l)).get("epoch", 0) <= epochs and "final" not in r]
    (out / "metrics.jsonl").write_text("".join(l + "\n" for l in kept))
    if src.resolve() != out.resolve() and (src / "best.safetensors").is_file():
        shutil.copyfile(src / "best.safetensors", out / "best.safetensors")
