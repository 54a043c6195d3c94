"""What each word of the language is, for editors (hover, completion): generated from the
registries' records and the sections' parameter models, never from a second list.

Every function here is torch-free: the language server answers from it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic_core import PydanticUndefined

from nnc.compiler.layers import LAYERS, STRUCTURE
from nnc.compiler.spec import DEFAULTS, INPUTS, SECTIONS, DataOptions, EarlyStop, Finetune, Regularize, Train
from nnc.compiler.values import RANGES, format_value
from nnc.compiler.vocab.augment import AUGMENT
from nnc.compiler.vocab.initializers import INITIALIZERS
from nnc.compiler.vocab.losses import LOSSES
from nnc.compiler.vocab.optimizers import OPTIMIZERS
from nnc.compiler.vocab.preprocess import PREPROCESS
from nnc.compiler.vocab.registry import Params, Registry
from nnc.compiler.vocab.schedules import SCHEDULES, Warmup
from nnc.compiler.vocab.sources import SOURCES


@dataclass(frozen=True)
class Param:
    name: str
    default: str | None  # None: required

    def __str__(self) -> str:
        return f"{self.name} (required)" if self.default is None else f"{self.name} = {self.default}"


def params(model: type[Params]) -> list[Param]:
    """A parameter model's fields as the spec writes them: name (its alias), type, default."""
    out = []
    for name, f in model.model_fields.items():
        if f.default is PydanticUndefined and f.default_factory is None:
            default = None
        else:
            value = f.default if f.default_factory is None else f.default_factory()
            default = "none" if value is None else format_value(value)
        out.append(Param(f.alias or name, default))
    return out


# Each kind of word, in the order a word's meanings are listed: (what, registry).
REGISTRIES: tuple[tuple[str, Registry], ...] = (
    ("layer", LAYERS), ("initializer", INITIALIZERS), ("loss", LOSSES), ("optimizer", OPTIMIZERS),
    ("schedule", SCHEDULES), ("preprocessing step", PREPROCESS), ("augmentation", AUGMENT), ("data source", SOURCES),
)
# Which registry a section's entries name, and the keys it takes besides.
SECTION_WORDS: dict[str, tuple[Registry | None, tuple[str, ...]]] = {
    "init": (None, ("weights", "bias")),
    "loss": (LOSSES, ()),
    "regularize": (None, tuple(p.name for p in params(Regularize))),
    "optimizer": (OPTIMIZERS, ("lr_mult", "decay_mult")),
    "schedule": (SCHEDULES, ("warmup",)),
    "data": (SOURCES, tuple(p.name for p in params(DataOptions)) + ("preprocess", "augment")),
    "train": (None, tuple(p.name for p in params(Train))),
}
SECTION_DOCS = {
    "model": "the network: `model NAME {`, its input first, then one layer per line",
    "init": "weight and bias initialization rules: `weights INIT`, `bias INIT [before ACTIVATION]`, `LAYER weights INIT`",
    "loss": "the data loss the model is trained on",
    "regularize": "penalties on the weights: l2, l1, max_norm",
    "optimizer": "the update rule and its learning rate; `lr_mult(LAYER=F)` and `decay_mult(LAYER=F)` per layer",
    "schedule": "how the learning rate changes over the run, with an optional warmup(...)",
    "data": "the data source, its validation and test fractions, preprocessing and augmentation",
    "train": "batch size, epochs, seed, device, early stopping, clipping, ema, finetune, freeze",
}
# Calls whose keyword arguments are a parameter model of their own (not a registry word).
CALLS: dict[str, type[Params]] = {"early_stop": EarlyStop, "finetune": Finetune, "warmup": Warmup}
STRUCTURE_DOCS = {
    "input": "the model's input, first in the model block: " + ", ".join(f"{k}({', '.join(v)})" for k, v in INPUTS.items()),
    "repeat": "`repeat N { ... }`: the block's layers N times (named layers get _1, _2, ... suffixes)",
    "residual": "`residual [NAME] [project] { ... }`: the block's output plus its input (project: a 1x1 conv + "
                "batchnorm shortcut when the shapes differ)",
}


def record(what: str, word: str):
    registry = dict(REGISTRIES)[what]
    return registry.get(word)


def meanings(word: str) -> list[tuple[str, Any]]:
    """Every (what, record) the word names."""
    return [(what, reg[word]) for what, reg in REGISTRIES if word in reg]


def describe(what: str, rec: Any) -> str:
    """Markdown for one record: its word, kind, doc line, parameters with defaults."""
    lines = [f"**{rec.kind}** ({what}): {rec.doc}"]
    ps = params(rec.params)
    if ps:
        lines.append("")
        lines.append("parameters: " + ", ".join(f"`{p}`" for p in ps))
    positional = getattr(rec, "positional", ())
    if positional:
        lines.append(f"written without its key: {', '.join(positional)} (`{rec.kind} {' '.join(positional).upper()}`)")
    return "\n".join(lines)


def describe_section(word: str) -> str:
    text = f"**{word}** (section): {SECTION_DOCS.get(word, '')}"
    if word in DEFAULTS:
        text += f"\n\nwhen left out: `{word} {DEFAULTS[word]}`"
    registry, keys = SECTION_WORDS.get(word, (None, ()))
    if keys:
        models = {"regularize": Regularize, "train": Train, "data": DataOptions}
        ps = {p.name: p for p in params(models[word])} if word in models else {}
        text += "\n\nentries: " + ", ".join(f"`{ps[k]}`" if k in ps else f"`{k}`" for k in keys)
    return text


def option(model: type[Params], key: str) -> Param | None:
    return next((p for p in params(model) if p.name == key), None)


def describe_word(word: str) -> str | None:
    """Whatever the word is, out of context: a section, a structure word, a range, a record."""
    parts = []
    if word in SECTIONS:
        parts.append(describe_section(word))
    if word in STRUCTURE_DOCS:
        parts.append(f"**{word}**: {STRUCTURE_DOCS[word]}")
    if word in RANGES:
        parts.append(f"**{word}** (search range): `nnc search` draws this value; `nnc train` needs one value")
    if word in CALLS:
        parts.append(f"**{word}**: " + ", ".join(f"`{p}`" for p in params(CALLS[word])))
    parts += [describe(what, rec) for what, rec in meanings(word)]
    return "\n\n---\n\n".join(parts) if parts else None


__all__ = ["CALLS", "INPUTS", "LAYERS", "REGISTRIES", "SECTIONS", "SECTION_WORDS", "STRUCTURE", "Param", "describe",
           "describe_section", "describe_word", "meanings", "option", "params"]
