"""Learning-rate schedules as pure functions of the step (no torch).

Each schedule says its unit: `epochs` (the rate changes at epoch boundaries, t = completed
epochs) or `steps` (t = completed optimizer steps). A linear warm-up, when present, runs
first and the main schedule then starts its own clock at 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Literal

from pydantic import Field, model_validator

from nnc.compiler.vocab.registry import Params, Registry

Unit = Literal["epochs", "steps"]


class Constant(Params):
    pass


class Step(Params):
    every: int = Field(ge=1)
    factor: float = Field(0.1, gt=0, le=1)
    unit: Unit = "epochs"


class MultiStep(Params):
    at: tuple[int, ...]
    factor: float = Field(0.1, gt=0, le=1)
    unit: Unit = "epochs"

    @model_validator(mode="before")
    @classmethod
    def _one(cls, v):
        if isinstance(v, dict) and isinstance(v.get("at"), int):
            v = {**v, "at": (v["at"],)}
        return v

    @model_validator(mode="after")
    def _sorted(self):
        if list(self.at) != sorted(set(self.at)) or min(self.at) < 1:
            raise ValueError(f"at must be increasing positive milestones, got {self.at}")
        return self


class Exponential(Params):
    k: float = Field(gt=0)
    unit: Unit = "epochs"


class InverseTime(Params):
    k: float = Field(gt=0)
    unit: Unit = "epochs"


class Cosine(Params):
    min_lr: float = Field(0.0, ge=0)
    unit: Unit = "steps"


class OnPlateau(Params):
    metric: Literal["val_loss", "val_accuracy"] = "val_loss"
    factor: float = Field(0.1, gt=0, lt=1)
    patience: int = Field(5, ge=1)
    threshold: float = Field(1e-4, ge=0)
    min_lr: float = Field(0.0, ge=0)


class Warmup(Params):
    epochs: int | None = Field(None, ge=1)
    steps: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _one_of(self):
        if (self.epochs is None) == (self.steps is None):
            raise ValueError("warmup needs exactly one of epochs=N or steps=N")
        return self


@dataclass(frozen=True)
class ScheduleDef:
    """One learning-rate schedule word."""

    kind: str
    params: type[Params]
    factor: Callable[[Params, int, int], float] | None  # (params, t, total t) -> lr / lr0
    doc: str


def _step(p: Step, t, total):
    return p.factor ** (t // p.every)


def _multistep(p: MultiStep, t, total):
    return p.factor ** sum(t >= m for m in p.at)


def _cosine(p: Cosine, t, total, lr0=1.0):
    return 0.5 * (1 + math.cos(math.pi * min(t, total) / max(total, 1)))


SCHEDULES = Registry("schedule", (
    ScheduleDef("constant", Constant, lambda p, t, total: 1.0, "lr0"),
    ScheduleDef("step", Step, _step, "lr0 * factor^floor(t / every)"),
    ScheduleDef("multistep", MultiStep, _multistep, "lr0 * factor^(number of milestones <= t)"),
    ScheduleDef("exponential", Exponential, lambda p, t, total: math.exp(-p.k * t), "lr0 * e^(-k t)"),
    ScheduleDef("inverse_time", InverseTime, lambda p, t, total: 1 / (1 + p.k * t), "lr0 / (1 + k t)"),
    ScheduleDef("cosine", Cosine, _cosine, "min_lr + (lr0 - min_lr) * (1 + cos(pi t / T)) / 2"),
    ScheduleDef("on_plateau", OnPlateau, None, "lr *= factor when the metric has not improved for `patience` epochs"),
))


class Plateau:
    """Reduce on plateau: the scale on the scheduled rate, updated once per epoch."""

    def __init__(self, p: OnPlateau, lr0: float, state: dict | None = None):
        self.p, self.lr0 = p, lr0
        self.state = state or {"scale": 1.0, "best": None, "bad": 0}

    def update(self, value: float | None) -> float:
        s, p = self.state, self.p
        if value is not None:
            up = "accuracy" in p.metric
            if s["best"] is None or (value > s["best"] + p.threshold if up else value < s["best"] - p.threshold):
                s.update(best=value, bad=0)
            else:
                s["bad"] += 1
                if s["bad"] >= p.patience:  # `patience` bad epochs in a row, as early_stop counts them
                    s.update(scale=max(s["scale"] * p.factor, p.min_lr / self.lr0), bad=0)
        return s["scale"]


def lr_at(step: int, lr0: float, main_kind: str, main: Params, warmup: Warmup | None,
          steps_per_epoch: int, total_steps: int) -> float:
    """The learning rate for optimizer step `step` (0-based). on_plateau is handled by the
    caller (it depends on metrics, not on the step) and is constant here."""
    w = 0
    if warmup is not None:
        w = warmup.steps if warmup.steps is not None else warmup.epochs * steps_per_epoch
        if step < w:
            return lr0 * (step + 1) / w
    step -= w
    d = SCHEDULES[main_kind]
    if d.factor is None:
        return lr0
    if getattr(main, "unit", "epochs") == "epochs":
        t, total = step // steps_per_epoch, max(1, (total_steps - w) // steps_per_epoch)
    else:
        t, total = step, max(1, total_steps - w)
    f = d.factor(main, t, total)
    if main_kind == "cosine":
        return main.min_lr + (lr0 - main.min_lr) * f
    return lr0 * f
