"""Loss, accuracy, predictions and a confusion matrix over a split, batch by batch (held in
memory or streamed from disk, as the data plan says); `nnc eval` scores a checkpoint alone
(spec, preprocessing and classes are inside it)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from nnc.compiler.modules import first
from nnc.compiler.vocab.losses import LOSSES, build_loss
from nnc.diagnostics import NncError
from nnc.runtime import artifacts
from nnc.runtime.distributed import World
from nnc.runtime.feeds import EVAL_BATCH, open_data
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


def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn, classes: int | None,
             batch: int = 1024, autocast: bool = False, labels: bool = False) -> Evaluation:
    """`evaluate_batches` over tensors x, y (in-memory data)."""
    return evaluate_batches(model, ((x[i:i + batch], y[i:i + batch]) for i in range(0, len(x), batch)), loss_fn,
                            classes, autocast, labels)


@torch.no_grad()
def evaluate_batches(model: torch.nn.Module, batches, loss_fn, classes: int | None, autocast: bool = False,
                     labels: bool = False) -> Evaluation:
    """Eval mode (dropout off, batchnorm running stats); restores the previous mode. `batches`:
    (x, y) on the model's device, from memory or streamed from disk; nothing but the predictions
    is kept. `classes`: the accuracy of the argmax and the confusion matrix; `labels` (bce): the
    accuracy of each output's sign against targets > 0.5."""
    was = model.training
    model.eval()
    device = next(model.parameters()).device.type
    total, n, correct, compared, preds = 0.0, 0, 0, 0, []
    conf = torch.zeros(classes, classes, dtype=torch.long) if classes else None
    for xb, yb in batches:
        with torch.autocast(device, torch.bfloat16, enabled=autocast):
            s = model(xb)
        s = s.float()
        total += float(loss_fn(s, yb)) * len(s)
        n += len(s)
        s, yb = first(s), first(yb)  # (several outputs: accuracy and predictions are the first one's)
        if classes or labels:
            c, k = hits(s, yb, labels)
            correct, compared = correct + int(c), compared + int(k)
        if classes:
            pred = s.argmax(1).cpu()
            preds.append(pred)
            conf.index_put_((yb.cpu().reshape(-1), pred.reshape(-1)), torch.ones_like(pred.reshape(-1)),
                            accumulate=True)  # (per pixel: every pixel counts)
    model.train(was)
    acc = correct / compared if compared else (0.0 if classes else None)
    pred = torch.cat(preds).numpy() if preds else np.zeros(0, np.int64) if classes else None
    return Evaluation(total / max(n, 1), acc, pred, conf.numpy() if conf is not None else None, n)


def hits(scores: torch.Tensor, y: torch.Tensor, labels: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(correct, compared) on the device: the argmax against class labels (per pixel for an image
    of scores: every pixel counts), or for bce (`labels`) each output's sign against its target."""
    if labels:
        return ((scores > 0) == (y.reshape(scores.shape) > 0.5)).sum(), torch.tensor(scores.numel(), device=scores.device)
    return (scores.argmax(1) == y).sum(), torch.tensor(y.numel(), device=y.device)


def evaluate_checkpoint(path: str, split: str = "test", device: str = "auto", allow_read: tuple[str, ...] = ()) -> dict:
    """`allow_read`: data paths the user names (runtime/reads.py: a checkpoint's own are not followed blindly)."""
    art = artifacts.load(path, accept=(artifacts.CHECKPOINT,))
    check_reads(art.checkpoint, art.graph.spec, allow_read)
    model = art.model(device)
    dev = next(model.parameters()).device
    world = World()
    data = open_data(art.graph, world, dev, dict(art.stats), False, EVAL_BATCH)  # (streamed when training streamed)
    feed = getattr(data, split)
    if not feed.n:
        have = [s for s in ("test", "val", "train") if getattr(data, s).n]
        raise NncError(f"{path}: this run has no {split} split (its spec says data {split} 0); "
                       f"it has {', '.join(have)}: e.g. --split {have[0]}")
    loss_def = LOSSES[art.graph.spec.loss.kind]
    res = evaluate_batches(model, feed.eval_batches(world, EVAL_BATCH), build_loss(art.graph),
                           art.graph.output.features if loss_def.classification else None,
                           labels=loss_def.predicts == "labels")
    return {**res.as_dict(), "split": split, "classes": art.classes, "checkpoint": str(path)}
