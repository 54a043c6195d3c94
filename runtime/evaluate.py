"""Loss, accuracy, predictions and a confusion matrix over an in-memory split; `nnc eval`
scores a checkpoint alone (spec, preprocessing and classes are inside it)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from nnc.compiler.modules import first
from nnc.compiler.vocab.losses import LOSSES, build_loss
from nnc.diagnostics import NncError
from nnc.runtime import artifacts
from nnc.runtime.data import load_splits, tensors
from nnc.runtime.reads import check_reads


@dataclass
class Evaluation:
    loss: float
    accuracy: float | None
    predictions: np.ndarray | None
    confusion: np.ndarray | None
    n: int = 0

    def as_dict(self) -> dict:
        return {"loss": self.loss, "accuracy": self.accuracy, "n": self.n,
                "confusion": self.confusion.tolist() if self.confusion is not None else None,
                "predictions": self.predictions.tolist() if self.predictions is not None else None}


@torch.no_grad()
def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn, classes: int | None,
             batch: int = 1024, autocast: bool = False, labels: bool = False) -> Evaluation:
    """Eval mode (dropout off, batchnorm running stats); restores the previous mode. `classes`:
    the accuracy of the argmax; `labels` (bce): the accuracy of each output's sign against targets > 0.5."""
    was = model.training
    model.eval()
    total, outs = 0.0, []
    for i in range(0, len(x), batch):
        with torch.autocast(x.device.type, torch.bfloat16, enabled=autocast):
            s = model(x[i:i + batch])
        s = s.float()
        total += float(loss_fn(s, y[i:i + batch])) * len(s)
        outs.append(first(s))  # (several outputs: accuracy and predictions are the first one's)
    model.train(was)
    n = max(len(x), 1)
    y = first(y)
    if classes is None:
        acc = label_accuracy(torch.cat(outs), y) if labels and outs else None
        return Evaluation(total / n, acc, None, None, len(x))
    pred = torch.cat(outs).argmax(1) if outs else torch.zeros(0, dtype=torch.long)
    conf = torch.zeros(classes, classes, dtype=torch.long)  # (per pixel: every pixel counts)
    conf.index_put_((y.cpu().reshape(-1), pred.cpu().reshape(-1)), torch.ones_like(pred.cpu().reshape(-1)),
                    accumulate=True)
    return Evaluation(total / n, float((pred == y).float().mean()) if len(x) else 0.0, pred.cpu().numpy(), conf.numpy(),
                      len(x))


def label_accuracy(scores: torch.Tensor, y: torch.Tensor) -> float:
    """bce's accuracy: the fraction of outputs whose sign (logit > 0) matches its target (> 0.5)."""
    return float(((scores > 0) == (y.reshape(scores.shape) > 0.5)).float().mean())


def evaluate_checkpoint(path: str, split: str = "test", device: str = "auto", allow_read: tuple[str, ...] = ()) -> dict:
    """`allow_read`: data paths the user names (runtime/reads.py: a checkpoint's own are not followed blindly)."""
    art = artifacts.load(path, accept=(artifacts.CHECKPOINT,))
    check_reads(art.checkpoint, art.graph.spec, allow_read)
    model = art.model(device)
    dev = next(model.parameters()).device
    splits = load_splits(art.graph)
    part = getattr(splits, split)
    if not len(part.y):
        have = [s for s in ("test", "val", "train") if len(getattr(splits, s).y)]
        raise NncError(f"{path}: this run has no {split} split (its spec says data {split} 0); "
                       f"it has {', '.join(have)}: e.g. --split {have[0]}")
    loss_def = LOSSES[art.graph.spec.loss.kind]
    res = evaluate(model, *tensors(part, art.stats, dev), build_loss(art.graph),
                   art.graph.output.features if loss_def.classification else None, labels=loss_def.predicts == "labels")
    return {**res.as_dict(), "split": split, "classes": art.classes, "checkpoint": str(path)}
