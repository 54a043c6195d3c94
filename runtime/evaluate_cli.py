"""`nnc eval`: a checkpoint alone is enough (spec, preprocessing and classes are inside)."""

from __future__ import annotations

import numpy as np
import torch

from nnc.compiler.checks import check
from nnc.compiler.torch_module import build_model
from nnc.compiler.vocab.losses import LOSSES
from nnc.diagnostics import NncError
from nnc.runtime import checkpoint, preprocess
from nnc.runtime.data import load_splits
from nnc.runtime.evaluate import evaluate
from nnc.runtime.train import pick_device


def load_model(path: str, device: str = "cpu"):
    """(graph, model in eval mode with the checkpoint's weights, checkpoint)."""
    ck = checkpoint.load(path)
    graph = check(ck.spec())
    model = build_model(graph)
    ck.check_against(graph, model)
    model = model.to(pick_device(device))
    model.load_state_dict({k: v for k, v in ck.model.items()})
    model.eval()
    return graph, model, ck


def evaluate_checkpoint(path: str, split: str = "test", device: str = "auto") -> dict:
    graph, model, ck = load_model(path, device)
    dev = next(model.parameters()).device
    splits = load_splits(graph)
    part = getattr(splits, split)
    if not len(part.y):
        have = [s for s in ("test", "val", "train") if len(getattr(splits, s).y)]
        raise NncError(f"{path}: this run has no {split} split (its spec says data {split} 0); "
                       f"it has {', '.join(have)}: e.g. --split {have[0]}")
    x = preprocess.apply(ck.preprocess, part.x.astype(np.float32)) if ck.preprocess else part.x
    loss_def = LOSSES[graph.spec.loss.kind]
    res = evaluate(model, torch.as_tensor(np.ascontiguousarray(x)).to(dev), torch.as_tensor(part.y).to(dev),
                   loss_def.build(graph.spec.loss.params), graph.output.features if loss_def.classification else None)
    return {**res.as_dict(), "split": split, "classes": ck.classes, "checkpoint": str(path)}
