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
DEFAULT_INPUT, DEFAULT_OUTPUT = "input", "output"  # the names of a model's one input and output
INPUTS = {"image": ("C", "H", "W"), "vector": ("D",), "sequence": ("T", "D"), "tokens": ("T", "vocabulary")}

# ---------------------------------------------------------------- the validated spec


@dataclass(frozen=True)
class Use:
    """One use of a block around a layer: which block, the path the use gave it, the line of the
    use and the line of the block's definition (diagnostics point at both)."""

    block: str
    path: str
    span: Span
    definition: Span


@dataclass(frozen=True)
class LayerNode:
    """One layer (or merge) of the model, in execution order. `sources` are the values it reads:
    an input's name or an earlier node's path; empty: the previous node's output."""

    kind: str
    name: str
    params: Params
    span: Span
    spans: dict[str, Span] = field(default_factory=dict, compare=False)
    path: str = ""  # the module path, e.g. layer2.block1.conv1 (empty: the name)
    sources: tuple[str, ...] = ()
    trace: tuple[Use, ...] = ()  # the block uses around it, outermost first
    selectors: tuple[str, ...] = ()  # the names rules (init, lr_mult, freeze, skip) may give it
    project: bool = False  # the add of a `residual project` block: its shortcut is a 1x1 conv + BN

    @property
    def where(self) -> str:
        return self.path or self.name


@dataclass(frozen=True)
class GroupNode:
    """A named group of layers: a residual block, a block use, a named branch or merge. Its
    layers' paths start with its path; `output` is the value it ends with."""

    kind: str  # residual | block | branch | concat | add
    name: str
    path: str
    span: Span
    label: str  # as the listing shows it: basic(64, stride=2), residual project, concat
    input: str
    output: str
    trace: tuple[Use, ...] = ()
    definition: Span | None = None  # a block use: where its block is defined


@dataclass(frozen=True)
class InputNode:
    """A named input of the model and its shape."""

    name: str
    shape: Shape
    span: Span


@dataclass(frozen=True)
class OutputNode:
    """A named output of the model: the value it is."""

    name: str
    source: str  # the value it is: a node's path or an input's name
    span: Span


Node = LayerNode


@dataclass(frozen=True)
class ModelSpec:
    """The model block, flattened."""

    name: str
    input: Shape  # the first input
    input_span: Span
    body: tuple[LayerNode, ...]  # flat, in execution order
    inputs: tuple[InputNode, ...] = ()
    outputs: tuple[OutputNode, ...] = ()
    groups: tuple[GroupNode, ...] = ()


@dataclass(frozen=True)
class OutputLoss:
    """The loss of one output and its weight in the total: `loss aux cross_entropy weight 0.3`."""

    output: str  # the output's name
    choice: Choice
    weight: float = 1.0
    span: Span | None = None


@dataclass(frozen=True)
class InitRule:
    """One rule of the init section."""

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
    # how another tool's tensor names become this spec's: a map nnc ships (torchvision_resnet18, ...)
    # or a map file beside the spec (compiler/namemap.py); none for an nnc checkpoint
    map: str | None = None


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
    """The data section."""

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
    """The optimizer and its per-layer multipliers."""

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
    """The schedule and its warmup."""

    main: Choice
    warmup: Warmup | None = None


@dataclass(frozen=True)
class Spec:
    """The validated spec: what the compiler's schema stage produces."""

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
    losses: tuple[OutputLoss, ...] = ()  # one per output, in the outputs' order (`loss` is the first's)
    files: dict[str, str] = field(default_factory=dict, compare=False)  # the included files: path -> text
    blocks: dict = field(default_factory=dict, compare=False)  # block name -> compiler.blocks.BlockDef
    includes: tuple[tuple[str, Span], ...] = field(default=(), compare=False)  # (resolved path, include line)

    @property
    def text(self) -> str:
        return self.document.text

    @property
    def sha256(self) -> str:
        """The hash of the spec's text: what exported models and generated source record."""
        import hashlib

        h = hashlib.sha256(self.text.encode())
        for path in sorted(self.files):  # the files it includes are part of it
            h.update(f"\0{path}\0{self.files[path]}".encode())
        return h.hexdigest()

    def locate(self, path: str, section: str | None = None) -> str:
        """A file the spec names (data, a checkpoint to fine-tune from): a relative path is read
        beside the spec file (beside the included file that wrote `section`, if one did), else
        from the current directory (so a spec runs from anywhere, and a checkpoint, which records
        its spec's absolute path, finds its data)."""
        from pathlib import Path

        span = self.spans.get(section) if section else None
        where = span.doc.name if span is not None and span.doc is not None else self.document.name
        if Path(path).is_absolute() or where.startswith("<"):
            return path
        beside = Path(where).parent / path
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
