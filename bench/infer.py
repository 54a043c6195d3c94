"""Inference latency: each spec exported by nnc and run by onnxruntime, against the same model
run by PyTorch eager, side by side in one process. Prints ms per call and the ratio.

    python bench/infer.py                           # CPU, every spec that is quick there
    python bench/infer.py --specs digits_cnn alexnet --batches 1 64 --rounds 5
    python bench/infer.py --device cuda             # CUDAExecutionProvider vs torch on CUDA, every spec

Each spec's model is built with its spec's initialization (weights do not change latency), given
preprocessing statistics when the spec preprocesses (so the graph holds the Sub / Div a trained
export has, and the torch side applies the same), exported and verified by `nnc export`'s code to
a temporary folder. One call is what a deployment does: a raw float32 numpy batch in, the scores
out as numpy, so both sides include the host-to-device and device-to-host copies on CUDA. Both run
in float32 (no autocast) with the same number of CPU threads. Calls are timed in blocks of about
--block seconds, alternating onnxruntime and torch blocks for --rounds rounds so that drift in a
shared machine hits both, with a pause before each block; the median block gives ms per call.
onnxruntime runs with its default session options (as `nnc infer` does) but the thread count. On the CPU, specs whose largest
batch costs more than --max-gflops per call (ResNet18, VGG16 at batch 64) are skipped with a note
unless named in --specs.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from nnc.compiler.checks import check
from nnc.compiler.load import load_spec
from nnc.compiler.onnx_graph import INPUT
from nnc.compiler.torch_module import build_model
from nnc.diagnostics import NncError
from nnc.runtime.export import export, random_inputs
from nnc.runtime.infer import providers
from nnc.runtime.preprocess import apply

ROOT = Path(__file__).resolve().parents[1]


def fake_stats(graph) -> dict[str, np.ndarray]:
    """Mean / std arrays of the input's shape when the spec preprocesses (PCA specs: none)."""
    steps = {c.kind for c in graph.spec.data.preprocess}
    if not steps or graph.input.kind == "tokens" or steps & {"pca", "whiten"}:
        return {}
    dims = graph.spec.model.input.dims
    rng = np.random.default_rng(0)
    return {"mean": rng.uniform(0, 1, dims).astype(np.float32), "std": rng.uniform(0.5, 2, dims).astype(np.float32)}


def timed_block(fn, seconds: float) -> float:
    """ms per call of fn(), over about `seconds` (at least one call), after a pause: onnxruntime's
    idle intra-op threads spin for a while after a run (and OpenMP's after a parallel region),
    which slowed a torch block that followed at once by 1.3-2x on 2 cores."""
    time.sleep(0.1)
    t0 = time.perf_counter()
    fn()
    one = time.perf_counter() - t0
    k = max(1, int(seconds / max(one, 1e-6)))
    t0 = time.perf_counter()
    for _ in range(k):
        fn()
    return 1e3 * (time.perf_counter() - t0) / k


def bench_spec(name: str, device: str, batches: list[int], rounds: int, block: float, threads: int) -> dict:
    graph = check(load_spec(str(ROOT / "specs" / f"{name}.nnspec")))
    model = build_model(graph).eval()
    stats = fake_stats(graph)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"{name}.onnx"
        t0 = time.perf_counter()
        export(graph, model, stats, None, path)
        export_s = time.perf_counter() - t0
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.intra_op_num_threads = threads
        ort.set_default_logger_severity(4)  # no raw red line of its own where CUDA libraries are missing
        try:
            wanted = providers(device)
        except NncError as e:  # onnxruntime (not onnxruntime-gpu) has no CUDA provider
            raise SystemExit(f"{e}; install onnxruntime-gpu to compare on CUDA") from None
        sess = ort.InferenceSession(str(path), opts, providers=wanted)
    if device == "cuda" and sess.get_providers()[0] != "CUDAExecutionProvider":
        raise SystemExit("onnxruntime could not start its CUDA provider here (missing CUDA / cuDNN libraries?)")
    dev = torch.device(device)
    model.to(dev)
    tstats = {k: torch.from_numpy(v).to(dev) for k, v in stats.items()}

    def torch_call(x):
        with torch.inference_mode():
            t = torch.from_numpy(x).to(dev)
            if tstats:
                t = apply(tstats, t)
            return model(t).cpu().numpy()  # .cpu() waits for the GPU

    rows = {}
    for b in batches:
        x = random_inputs(graph, stats, b)
        run_ort = lambda: sess.run(None, {INPUT: x})  # noqa: E731
        run_torch = lambda: torch_call(x)  # noqa: E731
        for _ in range(2):  # warm-up: onnxruntime's first runs, cuDNN algorithm choice, allocator
            run_ort(), run_torch()
        o, t = [], []
        for _ in range(rounds):
            o.append(timed_block(run_ort, block))
            t.append(timed_block(run_torch, block))
        rows[b] = (statistics.median(o), statistics.median(t))
    return {"params": graph.n_params, "export_s": export_s, "rows": rows, "provider": sess.get_providers()[0]}


def _count(n: int) -> str:
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.1f}k"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--specs", nargs="+", metavar="NAME", help="spec names in specs/ (default: all quick ones)")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 64])
    ap.add_argument("--rounds", type=int, default=3, help="alternating onnxruntime / torch blocks per batch size")
    ap.add_argument("--block", type=float, default=0.3, help="seconds per timed block")
    ap.add_argument("--max-gflops", type=float, default=150.0,
                    help="CPU only: skip specs costing more per call at the largest batch (0: no limit)")
    a = ap.parse_args()
    if a.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA device here")
    names = a.specs or sorted(p.stem for p in (ROOT / "specs").glob("*.nnspec"))
    skipped = []
    if not a.specs and a.device == "cpu" and a.max_gflops > 0:
        keep = []
        for n in names:
            g = check(load_spec(str(ROOT / "specs" / f"{n}.nnspec")))
            gf = g.flops * max(a.batches) / 1e9
            (keep if gf <= a.max_gflops else skipped).append(n if gf <= a.max_gflops else f"{n} ({gf:,.0f})")
        names = keep
    threads = torch.get_num_threads()
    print(f"onnxruntime {ort.__version__} vs torch {torch.__version__} eager, device {a.device}, "
          f"{threads} CPU threads each; ms per call (raw numpy in, scores out), median of {a.rounds} blocks")
    head = f"{'spec':<12} {'params':>7} {'export':>7}"
    for b in a.batches:
        head += f" | {'batch ' + str(b):>8}: {'ort ms':>8} {'torch ms':>9} {'torch/ort':>9}"
    print(head)
    for n in names:
        r = bench_spec(n, a.device, a.batches, a.rounds, a.block, threads)
        line = f"{n:<12} {_count(r['params']):>7} {r['export_s']:>6.1f}s"
        for b in a.batches:
            o, t = r["rows"][b]
            line += f" | {'':>8}  {o:>8.3f} {t:>9.3f} {t / o:>8.2f}x"
        print(line, flush=True)
    if skipped:
        print(f"skipped on the CPU (GFLOPs per call at batch {max(a.batches)} over --max-gflops {a.max_gflops:g}): "
              f"{', '.join(skipped)}; name them in --specs or pass --max-gflops 0 to run them")


if __name__ == "__main__":
    main()
