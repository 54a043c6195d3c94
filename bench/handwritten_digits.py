"""What `nnc train specs/digits_cnn.nnspec` (or digits_mlp) does, written by hand in one file of
plain PyTorch: the baseline of bench/end_to_end.py.

    python bench/handwritten_digits.py [--spec cnn|mlp] [--epochs N] [-v] [--json]

The same job as the spec, decision by decision:
  data       scikit-learn's load_digits (1797 8x8 images, values 0-16), split by a numpy
             permutation seeded 0: test = the first round(0.2 N), val = the next round(0.1 N),
             train = the rest (1258), as runtime/data.py's load_splits does
  preprocess statistics of the training split only, in float64: cnn `channel_mean normalize`
             (one mean and one std over all pixels), mlp `mean_image normalize` (per pixel;
             a pixel whose std is ~0 is left unscaled)
  model      cnn: conv 32 3x3 pad 1 - relu - conv 32 3x3 pad 1 - relu - maxpool 2 - fc 128 -
             relu - dropout 0.3 - fc 10, in channels_last as nnc trains conv nets;
             mlp: fc 128 - relu - dropout 0.2 - fc 10
  init       He: N(0, sqrt(2 / fan_in)) for every weight, drawn from a generator seeded 0 in
             layer order; biases 0.01 before a ReLU in the cnn, else 0
  optimizer  Adam (cnn lr 2e-3, mlp 3e-3), L2 1e-4 as weight_decay on weights only
  schedule   cosine per optimizer step over epochs x ceil(1258 / 32) steps, down to 0
  batches    32, a fresh torch.randperm per epoch from a generator seeded 0, sliced
  stopping   validation loss after every epoch; stop when it has not improved for the patience
             (cnn 8, mlp 10) epochs, of at most 25 (cnn) / 30 (mlp) epochs
  result     the best validation epoch's weights (a state_dict copy in memory), scored on the
             test split

The seeding mirrors nnc's (torch.manual_seed(0) before the modules are built, the same init
generator and shuffle generator), so on the CPU this script usually lands on nnc's very numbers.
What nnc does on top, and this script does not: the per-step divergence check and train
accuracy, a no-grad loss on the epoch's last batch, metrics.jsonl and TensorBoard scalars, the
babysitting monitors (every 50 steps: activation / gradient / update statistics, TensorBoard
histograms), `best` and `last` safetensors checkpoints every epoch (`last` with optimizer and
RNG state), spec copy, and loss.png / accuracy.png / dashboard.png / filters.png at the end.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time

T0 = time.perf_counter()

import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from torch import nn  # noqa: E402

CONFIG = {  # what specs/digits_{cnn,mlp}.nnspec say
    "cnn": {"lr": 2e-3, "epochs": 25, "patience": 8, "dropout": 0.3},
    "mlp": {"lr": 3e-3, "epochs": 30, "patience": 10, "dropout": 0.2},
}
L2, BATCH, SEED = 1e-4, 32, 0


def splits(kind: str):
    d = load_digits()
    x, y = d.data.astype(np.float32), d.target.astype(np.int64)
    if kind == "cnn":
        x = x.reshape(-1, 1, 8, 8)
    n = len(x)
    perm = np.random.default_rng(SEED).permutation(n)
    n_test, n_val = round(0.2 * n), round(0.1 * n)
    test, val, train = perm[:n_test], perm[n_test:n_test + n_val], perm[n_test + n_val:]
    xtr = x[train].astype(np.float64)
    if kind == "cnn":  # channel_mean, then normalize: one statistic per channel
        mean = xtr.mean((0, 2, 3), keepdims=True)[0]
        std = (xtr - mean).std((0, 2, 3), keepdims=True)[0]
    else:  # mean_image, then normalize: per pixel
        mean = xtr.mean(0)
        std = (xtr - mean).std(0)
    std = np.where(std > 1e-8, std, 1.0)
    mean, std = mean.astype(np.float32), std.astype(np.float32)
    return [(torch.from_numpy((x[i] - mean) / std), torch.from_numpy(y[i])) for i in (train, val, test)]


def model(kind: str) -> nn.Sequential:
    p = CONFIG[kind]["dropout"]
    if kind == "cnn":
        net = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
                            nn.MaxPool2d(2, 2), nn.Flatten(), nn.Linear(512, 128), nn.ReLU(), nn.Dropout(p),
                            nn.Linear(128, 10))
    else:
        net = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Dropout(p), nn.Linear(128, 10))
    gen = torch.Generator().manual_seed(SEED)
    layers = [m for m in net if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        for m in layers:
            fan_in = m.weight[0].numel()
            m.weight.normal_(0, math.sqrt(2 / fan_in), generator=gen)
            m.bias.fill_(0.01 if kind == "cnn" and m is not layers[-1] else 0.0)
    return net


@torch.no_grad()
def evaluate(net: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn) -> tuple[float, float]:
    net.eval()
    scores = net(x)
    net.train()
    return loss_fn(scores, y).item(), (scores.argmax(1) == y).float().mean().item()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--spec", choices=("cnn", "mlp"), default="cnn")
    ap.add_argument("--epochs", type=int, help="override the spec's epochs (a smoke run)")
    ap.add_argument("--nchw", action="store_true", help="the cnn in the default NCHW layout, not channels_last")
    ap.add_argument("--nnc-rng", action="store_true",
                    help="also run nnc's end-of-epoch no-grad forward of the last batch (train mode: its dropout "
                         "draws from the global RNG), so that the run follows nnc's random stream exactly")
    ap.add_argument("-v", "--verbose", action="store_true", help="one line per epoch")
    ap.add_argument("--json", action="store_true", help="end with one JSON line")
    a = ap.parse_args()
    cfg = CONFIG[a.spec]
    epochs = a.epochs or cfg["epochs"]
    (xtr, ytr), (xva, yva), (xte, yte) = splits(a.spec)
    torch.manual_seed(SEED)
    net = model(a.spec)
    if a.spec == "cnn" and not a.nchw:
        net = net.to(memory_format=torch.channels_last)
        xtr = xtr.contiguous(memory_format=torch.channels_last)
    decay = [p for p in net.parameters() if p.dim() > 1]
    no_decay = [p for p in net.parameters() if p.dim() <= 1]
    opt = torch.optim.Adam([{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": L2}],
                           lr=cfg["lr"])
    loss_fn = nn.CrossEntropyLoss()
    shuffle = torch.Generator().manual_seed(SEED)
    n = len(xtr)
    total = math.ceil(n / BATCH) * epochs
    step, best, best_epoch, best_state, bad, t_train = 0, math.inf, 0, None, 0, time.perf_counter()
    for epoch in range(epochs):
        t_epoch = time.perf_counter()
        perm = torch.randperm(n, generator=shuffle)
        for i in range(0, n, BATCH):
            for g in opt.param_groups:
                g["lr"] = cfg["lr"] * 0.5 * (1 + math.cos(math.pi * step / total))
            idx = perm[i:i + BATCH]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(net(xtr[idx]), ytr[idx])
            loss.backward()
            opt.step()
            step += 1
        if a.nnc_rng:
            with torch.no_grad():
                net(xtr[idx])
        rate = n / (time.perf_counter() - t_epoch)
        val_loss, val_acc = evaluate(net, xva, yva, loss_fn)
        if a.verbose:
            print(f"epoch {epoch + 1}: val loss {val_loss:.4f}, val accuracy {100 * val_acc:.2f}%, {rate:,.0f} samples/s")
        if val_loss < best:
            best, best_epoch, bad = val_loss, epoch + 1, 0
            best_state = copy.deepcopy(net.state_dict())
        else:
            bad += 1
            if bad >= cfg["patience"]:
                break
    t_train = time.perf_counter() - t_train
    net.load_state_dict(best_state)
    test_loss, test_acc = evaluate(net, xte, yte, loss_fn)
    result = {"test_loss": test_loss, "test_accuracy": test_acc, "best_epoch": best_epoch, "epochs": epoch + 1,
              "train_s": t_train, "time": time.perf_counter() - T0}
    if a.json:
        print(json.dumps(result))
    else:
        print(f"test loss {test_loss:.4f}, test accuracy {100 * test_acc:.2f}% (best epoch {best_epoch} of "
              f"{epoch + 1}, {t_train:.1f} s training, {result['time']:.1f} s since start)")


if __name__ == "__main__":
    main()
