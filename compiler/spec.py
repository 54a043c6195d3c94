"""The validated, immutable `Spec` and its parts: what the compiler's schema stage produces
and everything downstream reads. Every section but `model` has a documented default (DEFAULTS).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, field_validator

from nnc.compiler.layers import Shape
from nnc.compiler.layers.base import Params
from nnc.compiler.values import Choice, SearchRange
from nnc.compiler.vocab.schedules import Warmup
from nnc.diagnostics import Diagnostic, Document, Span

VERSION = 1
MAX_LAYERS = 10_000  # after repeats are expanded: ResNet-152 has ~500
SECTIONS = ("model", "init", "loss", "regularize", "optimizer", "schedule", "data", "train")
INPUTS = {"image": ("C", "H", "W"), "vector": ("D",), "sequence": ("T", "D"), "tokens": ("T", "vocabulary")}

# ---------------------------------------------------------------- the validated spec


@dataclass(frozen=True)
class LayerNode:
    kind: str
    name: str
    params: Params
    span: Span
    spans: dict[str, Span] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class ResidualNode:
    name: str
    project: bool
    body: tuple["LayerNode | ResidualNode", ...]
    span: Span


Node = LayerNode | ResidualNode


@dataclass(frozen=True)
class ModelSpec:
    name: str
    input: Shape
    input_span: Span
    body: tuple[Node, ...]


@dataclass(frozen=True)
class InitRule:
    target: Literal["weights", "bias"]
    init: Choice
    layer: str | None = None  # a per-layer override
    before: str | None = None  # only layers followed by this activation
    span: Span | None = None


# One name or several: `freeze fc1`, `freeze fc1 fc2`, `skip=(fc7, fc8)`.
Names = Annotated[tuple[str, ...], BeforeValidator(lambda v: (v,) if isinstance(v, str) else v)]


class Regularize(Params):
    l2: float = Field(0.0, ge=0)  # L + l2/2 * ||w||^2, gradient l2*w
    l1: float = Field(0.0, ge=0)  # L + l1 * |w|  (both together: elastic net)
    max_norm: float | None = Field(None, gt=0)  # ||w_row|| <= c after every update
    decay_bias: bool = False  # biases (and norm shifts/scales) are excluded by default


class EarlyStop(Params):
    patience: int = Field(10, ge=1)
    metric: Literal["val_loss", "val_accuracy"] = "val_loss"
    min_delta: float = Field(0.0, ge=0)


class Finetune(Params):
    path: str = Field(alias="from")
    skip: Names = ()  # layers left at their fresh initialization (e.g. a new fc8)


class Train(Params):
    batch: int = Field(64, ge=1)
    epochs: int = Field(10, ge=1)
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    early_stop: EarlyStop | None = None
    clip_norm: float | None = Field(None, gt=0)
    clip_value: float | None = Field(None, gt=0)
    ema: float | None = Field(None, gt=0, lt=1)
    finetune: Finetune | None = None
    freeze: Names = ()
    monitor_every: int = Field(50, ge=0)  # steps between monitor samples; 0 turns monitors off
    # precision and speed (runtime/device.py): auto is bf16 autocast on CUDA, fp32 on the CPU
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    channels_last: Literal["auto"] | bool = "auto"  # auto: for models with conv layers
    compile: bool = False  # torch.compile the model (useful on GPUs; slow to start)
    sync_batchnorm: bool = False  # batch statistics over every process's batch (several GPUs)

    @field_validator("channels_last", mode="before")
    @classmethod
    def _auto_or_bool(cls, v):  # one message, not one per member of the union
        if v != "auto" and not isinstance(v, bool):
            from nnc.compiler.values import format_value

            raise ValueError(f"channels_last must be auto, true or false, got {format_value(v)}")
        return v


class DataOptions(Params):
    val: float = Field(0.1, ge=0, lt=1)
    test: float = Field(0.2, ge=0, lt=1)
    seed: int = Field(0, ge=0)  # the split's (numpy's, never negative); `train seed` drives initialization and shuffling
    # runtime/feeds.py: data held in memory, or streamed from disk by worker processes (auto: by size)
    cache: Literal["auto", "memory", "stream"] = "auto"
    workers: int | None = Field(None, ge=0)  # streaming worker processes per training process (None: by CPUs)
    max_bad: float = Field(0.01, ge=0, lt=1)  # the fraction of unreadable images a run skips before it stops


@dataclass(frozen=True)
class DataSpec:
    source: Choice
    val: float
    test: float
    preprocess: tuple[Choice, ...] = ()
    augment: tuple[Choice, ...] = ()
    seed: int = 0
    cache: str = "auto"
    workers: int | None = None
    max_bad: float = 0.01


@dataclass(frozen=True)
class OptimizerSpec:
    choice: Choice
    lr_mult: dict[str, float] = field(default_factory=dict)
    decay_mult: dict[str, float] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return self.choice.kind

    @property
    def params(self):
        return self.choice.params


@dataclass(frozen=True)
class ScheduleSpec:
    main: Choice
    warmup: Warmup | None = None


@dataclass(frozen=True)
class Spec:
    document: Document
    version: int
    model: ModelSpec
    init: tuple[InitRule, ...]
    loss: Choice
    regularize: Regularize
    optimizer: OptimizerSpec
    schedule: ScheduleSpec
    data: DataSpec
    train: Train
    search: tuple[SearchRange, ...] = ()
    overrides: tuple[str, ...] = ()
    spans: dict[str, Span] = field(default_factory=dict, compare=False)  # "optimizer.lr" -> where it was written
    warnings: tuple[Diagnostic, ...] = ()

    @property
    def text(self) -> str:
        return self.document.text

    @property
    def sha256(self) -> str:
        """The hash of the spec's text: what exported models and generated source record."""
        import hashlib

        return hashlib.sha256(self.text.encode()).hexdigest()

    def locate(self, path: str) -> str:
        """A file the spec names (data, a checkpoint to fine-tune from): a relative path is read
        beside the spec file, else from the current directory (so a spec runs from anywhere, and
        a checkpoint, which records its spec's absolute path, finds its data)."""
        from pathlib import Path

        if Path(path).is_absolute() or self.document.name.startswith("<"):
            return path
        beside = Path(self.document.name).parent / path
        return str(beside) if beside.exists() or not Path(path).exists() else path


DEFAULTS = {
    "init": "weights auto, bias constant(0)",
    "loss": "cross_entropy",
    "regularize": "l2 0",
    "optimizer": "sgd(lr=0.01, momentum=0.9)",
    "schedule": "constant",
    "data": "digits, val 0.1, test 0.2, seed 0, cache auto, max_bad 0.01",
    "train": "batch 64, epochs 10, seed 0, device auto, monitor_every 50, precision auto, channels_last auto",
}
