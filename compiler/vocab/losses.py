"""The loss registry. Classification losses take integer labels, the others float targets.

`svm` is the notes' multiclass hinge, L_i = sum_{j != y_i} max(0, s_j - s_{y_i} + margin),
averaged over the batch; torch's MultiMarginLoss would also divide by the class count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from pydantic import Field

from nnc.compiler.vocab.registry import NoParams, Params, Registry


class CrossEntropy(Params):
    label_smoothing: float = Field(0.0, ge=0, lt=1)


class SVM(Params):
    margin: float = Field(1.0, gt=0)


@dataclass(frozen=True)
class LossDef:
    """One loss word."""

    kind: str
    params: type[Params]
    build: Callable  # params -> (scores, targets) -> scalar tensor
    classification: bool  # integer labels and an accuracy metric
    chance: Callable[[Params, int], float] | None  # expected loss of uniform scores over C classes
    doc: str
    # what the outputs predict: "class" (the argmax of the scores), "labels" (each output on its own:
    # positive when its logit is > 0, scored elementwise against targets > 0.5) or "values" (regression)
    predicts: str = "values"


def _cross_entropy(p: CrossEntropy):
    import torch.nn.functional as F
    return lambda s, y: F.cross_entropy(s, y, label_smoothing=p.label_smoothing)


def svm_loss(scores, y, margin: float = 1.0):
    correct = scores.gather(1, y[:, None])
    margins = (scores - correct + margin).clamp_min(0)
    margins = margins.scatter(1, y[:, None], 0.0)  # j != y_i
    return margins.sum(1).mean()


def _svm(p: SVM):
    return lambda s, y: svm_loss(s, y, p.margin)


def _mse(p):
    import torch.nn.functional as F
    return lambda s, y: F.mse_loss(s, y.reshape(s.shape))


def _l1(p):
    import torch.nn.functional as F
    return lambda s, y: F.l1_loss(s, y.reshape(s.shape))


def _bce(p):
    import torch.nn.functional as F
    return lambda s, y: F.binary_cross_entropy_with_logits(s, y.reshape(s.shape))


LOSSES = Registry("loss", (
    LossDef("cross_entropy", CrossEntropy, _cross_entropy, True, lambda p, c: math.log(c),
            "softmax cross-entropy on the scores: -log(e^s_y / sum_j e^s_j)", "class"),
    LossDef("svm", SVM, _svm, True, lambda p, c: (c - 1) * p.margin,
            "multiclass hinge: sum over j != y of max(0, s_j - s_y + margin), batch mean", "class"),
    LossDef("mse", NoParams, _mse, False, None, "mean squared error (regression)"),
    LossDef("l1", NoParams, _l1, False, None, "mean absolute error (regression)"),
    LossDef("bce", NoParams, _bce, False, None, "binary cross-entropy on logits, targets in [0, 1]", "labels"),
))


def build_loss(graph):
    """The spec's training objective as one function (scores, targets) -> scalar: its loss on the
    one output, or the weighted sum over several (scores and targets are then Multis)."""
    losses = graph.spec.losses
    if len(losses) <= 1:
        w = losses[0].weight if losses else 1.0
        f = LOSSES[graph.spec.loss.kind].build(graph.spec.loss.params)
        return f if w == 1.0 else (lambda s, y: w * f(s, y))
    parts = [(LOSSES[o.choice.kind].build(o.choice.params), o.weight) for o in losses]

    def total(scores, targets):
        out = 0.0
        for (f, w), s, y in zip(parts, scores.parts, targets.parts):
            if w:
                out = out + w * f(s, y)
        return out
    return total


def chance_loss(graph, n_classes: int | None) -> float:
    """The loss of uniform scores (the divergence rule's floor): summed over the outputs with a
    classification loss, by their weights; 0 where there is none."""
    total = 0.0
    for o, (_, _, shape) in zip(graph.spec.losses, graph.outputs):
        d = LOSSES[o.choice.kind]
        if d.classification and d.chance:
            total += o.weight * d.chance(o.choice.params, shape.features)
    return total
