"""Streaming data from disk: nnc's streamed image path against a hand-written DataLoader + Pillow
pipeline over the same folder with the same workers, and the memory of `nnc train` as the
folder grows past the memory it is allowed.

    python bench/data_stream.py [--images 4000] [--size 96] [--input 64] [--workers 2] [--rounds 5]
    python bench/data_stream.py --memory [--cap 64M] [--images 5000]   # peak memory at two folder sizes
    python bench/data_stream.py --smoke                                 # tiny, for CI

Throughput: one epoch of training batches (batch 128, shuffled) of a folder of JPEG files
(--size px squares, several classes), decoded, resized to --input, as float32 tensors in the
main process. nnc: the training feed of `data imagefolder(...), cache stream, workers W`
(runtime/feeds.py: batch-at-a-time decoding in the workers, uint8 to the main process, float and
channel statistics there). Hand-written: a map-style Dataset whose __getitem__ opens one file with
Pillow, converts to RGB, resizes, and returns a CHW uint8 tensor and its label; DataLoader(batch
128, shuffle, the same workers), then `.float()` and the same normalization in the main process.
Rounds alternate which side goes first; the ratio is the median of the per-round ratios.

Memory: `nnc train` (a small conv net, --epochs 2, cache auto, NNC_MEMORY=--cap) on a folder whose
decoded size is several times the cap, and on one twice as large; the peak proportional set size
(PSS, so that pages the forked workers share count once) of the whole process tree, sampled every
20 ms, and the run's test accuracy (ten classes told apart by a colour shift under the same kind
of patterns: chance is 10%). `--contrast` adds the same runs with `cache memory`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
BATCH = 128


def make_folder(root: Path, n: int, size: int, classes: int = 10, start: int = 0) -> Path:
    """n JPEGs (smooth colour fields plus noise, as photos compress) in `classes` folders; a class
    is a tint (a hue around the colour wheel) under random patterns."""
    from PIL import Image

    rng = np.random.default_rng(start)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for i in range(start, start + n):
        c = i % classes
        (root / f"class{c:02d}").mkdir(parents=True, exist_ok=True)
        a, b, p = rng.random(3) * 6
        base = np.stack([np.sin(a * xx + p), np.cos(b * yy + p), np.sin((a + b) * (xx + yy))], 2)
        tint = 50 * np.cos(2 * np.pi * (c / classes + np.array([0, 1 / 3, 2 / 3])))
        img = (base * 50 + 128 + tint + rng.normal(0, 12, (size, size, 3))).clip(0, 255).astype(np.uint8)
        Image.fromarray(img).save(root / f"class{c:02d}" / f"{i:06d}.jpg", quality=90)
    return root


SPEC = """model S {{
    input image(3, {s}, {s})
    conv c1 8 kernel 3 stride 2 pad 1
    relu
    maxpool 4
    dense {k}
}}
optimizer sgd(lr=0.01, momentum=0.9)
data imagefolder("{folder}"), val 0.05, test 0.05, cache {cache}, workers {w}, preprocess channel_mean normalize
train batch {b}, epochs {e}, monitor_every 0
"""


def nnc_feed(folder: Path, inp: int, workers: int):
    """nnc's training feed of the folder, and a function running one epoch of it."""
    import torch

    from nnc.compiler.checks import check
    from nnc.compiler.load import load_text
    from nnc.runtime.distributed import World
    from nnc.runtime.feeds import open_data
    from nnc.runtime.train import epoch_plan

    classes = len([d for d in folder.iterdir() if d.is_dir()])
    graph = check(load_text(SPEC.format(s=inp, k=classes, folder=folder, cache="stream", w=workers, b=BATCH, e=1)))
    data = open_data(graph, World(), torch.device("cpu"), None, True, BATCH)
    gen = torch.Generator().manual_seed(0)

    def epoch(e: int) -> tuple[int, float]:
        t0, n = time.perf_counter(), 0
        plan = epoch_plan(torch.randperm(data.train.n, generator=gen), BATCH, World())
        for xb, yb in data.train.batches(e, plan):
            n += len(yb)
        return n, time.perf_counter() - t0

    return epoch, data.stats


def hand_loader(folder: Path, inp: int, workers: int, stats: dict):
    """The pipeline a user writes by hand (the same decoding library, resize and workers)."""
    import torch
    from PIL import Image

    files = sorted(folder.glob("*/*.jpg"))
    names = sorted({f.parent.name for f in files})
    labels = [names.index(f.parent.name) for f in files]
    mean = torch.as_tensor(stats["mean"])
    std = torch.as_tensor(stats["std"])

    class Folder(torch.utils.data.Dataset):
        def __len__(self):
            return len(files)

        def __getitem__(self, i):
            with Image.open(files[i]) as im:
                a = np.array(im.convert("RGB").resize((inp, inp)))
            return torch.from_numpy(a).permute(2, 0, 1), labels[i]

    loader = torch.utils.data.DataLoader(Folder(), batch_size=BATCH, shuffle=True, num_workers=workers,
                                         persistent_workers=workers > 0)

    def epoch(e: int) -> tuple[int, float]:
        t0, n = time.perf_counter(), 0
        for xb, yb in loader:
            xb = ((xb.float() - mean) / std).contiguous(memory_format=torch.channels_last)
            n += len(yb)
        return n, time.perf_counter() - t0

    return epoch


def throughput(a) -> None:
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        folder = make_folder(Path(tmp) / "imgs", a.images, a.size)
        print(f"{os.cpu_count()} CPUs, torch {torch.__version__}, {a.images} JPEGs of {a.size}x{a.size} -> "
              f"{a.input}x{a.input}, batch {BATCH}, {a.workers} workers each side, {a.rounds} rounds "
              f"(+1 warm-up), load {os.getloadavg()[0]:.1f}")
        nnc_epoch, stats = nnc_feed(folder, a.input, a.workers)
        hand_epoch = hand_loader(folder, a.input, a.workers, stats)
        nnc_epoch(0), hand_epoch(0)  # workers started, files in the page cache
        ratios, rates = [], {"nnc": [], "hand": []}
        for r in range(1, a.rounds + 1):
            got = {}
            for side in (("nnc", "hand") if r % 2 else ("hand", "nnc")):
                n, s = (nnc_epoch if side == "nnc" else hand_epoch)(r)
                got[side] = n / s
                rates[side].append(got[side])
            ratios.append(got["nnc"] / got["hand"])
            print(f"round {r}: nnc {got['nnc']:8,.0f} images/s   hand-written {got['hand']:8,.0f} images/s   "
                  f"ratio {ratios[-1]:.3f}", flush=True)
    q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
    print(f"median: nnc {statistics.median(rates['nnc']):,.0f} images/s, hand-written "
          f"{statistics.median(rates['hand']):,.0f} images/s")
    print(f"nnc / hand-written: {statistics.median(ratios):.3f} median of {len(ratios)} rounds "
          f"(quartiles {q[0]:.3f}-{q[2]:.3f}); goal >= 0.95: {'met' if statistics.median(ratios) >= 0.95 else 'not met'}")


def tree_pss(pid: int) -> int:
    """Proportional set size (bytes) of a process and all its descendants (RSS where Pss is not readable)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            text = Path(f"/proc/{p}/smaps_rollup").read_text()
            total += next(int(l.split()[1]) for l in text.splitlines() if l.startswith("Pss:")) * 1024
        except (OSError, StopIteration):
            try:
                total += int(Path(f"/proc/{p}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            except OSError:
                continue
        try:
            todo += [int(c) for t in Path(f"/proc/{p}/task").iterdir()
                     for c in (t / "children").read_text().split()]
        except OSError:
            pass
    return total


def peak_memory(spec: Path, out: Path, env: dict) -> tuple[int, float, str]:
    proc = subprocess.Popen([sys.executable, "-m", "nnc.cli", "train", str(spec), "--out", str(out), "--device", "cpu",
                             "-q"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak, t0 = 0, time.perf_counter()
    done = threading.Event()

    def sample():
        nonlocal peak
        while not done.is_set():
            peak = max(peak, tree_pss(proc.pid))
            time.sleep(0.02)

    th = threading.Thread(target=sample)
    th.start()
    _, err = proc.communicate()
    done.set()
    th.join()
    if proc.returncode:
        raise SystemExit(f"nnc train failed ({proc.returncode}): {err}")
    import json

    final = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["final"]
    return peak, time.perf_counter() - t0, final["test_accuracy"]


def memory(a) -> None:
    from nnc.compiler.data_plan import parse_bytes

    cap = parse_bytes(a.cap)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folder = tmp / "imgs"
        per = 3 * a.input * a.input * 4
        print(f"cap NNC_MEMORY={a.cap}; {a.size}x{a.size} JPEGs read as {a.input}x{a.input} (float32: {per / 1024:.0f} KB "
              f"each), {a.workers} workers, load {os.getloadavg()[0]:.1f}")
        made = 0
        rows = []
        for n in (a.images, 2 * a.images):
            make_folder(folder, n - made, a.size, start=made)
            made = n
            for cache in ("auto", "memory") if a.contrast else ("auto",):
                spec = tmp / f"s{n}{cache}.nnspec"
                spec.write_text(SPEC.format(s=a.input, k=10, folder=folder, cache=cache, w=a.workers, b=64, e=a.epochs))
                env = {**os.environ, "NNC_MEMORY": a.cap}
                peak, secs, acc = peak_memory(spec, tmp / f"run{n}{cache}", env)
                path = "streamed" if cache == "auto" and n * per * 4 > cap else "in memory"
                rows.append((n, cache, peak, secs))
                print(f"{n:7,d} images, decoded {n * per / 2**20:7.0f} MB ({n * per / cap:4.1f}x the cap), cache {cache:6s} "
                      f"({path}): peak PSS of the process tree {peak / 2**20:6.0f} MB, {secs:5.1f} s, "
                      f"test accuracy {100 * acc:.1f}%", flush=True)
    auto = [r for r in rows if r[1] == "auto"]
    print(f"peak at {auto[1][0]:,} / at {auto[0][0]:,} images (cache auto): {auto[1][2] / auto[0][2]:.3f} "
          "(flat: about 1; the data doubled)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=4000)
    ap.add_argument("--size", type=int, default=96, help="side of the JPEG files")
    ap.add_argument("--input", type=int, default=64, help="side of the spec's input")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--memory", action="store_true", help="peak memory of nnc train at two folder sizes")
    ap.add_argument("--cap", default="64M", help="NNC_MEMORY for --memory")
    ap.add_argument("--contrast", action="store_true", help="--memory: also with cache memory")
    ap.add_argument("--epochs", type=int, default=2, help="--memory: epochs of each run")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes (CI)")
    a = ap.parse_args()
    if a.smoke:
        a.images, a.rounds, a.size, a.input = 300, 1, 48, 32
        if a.memory:
            a.cap = "1M"
    memory(a) if a.memory else throughput(a)


if __name__ == "__main__":
    main()
