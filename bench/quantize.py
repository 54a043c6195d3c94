"""int8 against fp32 onnxruntime, side by side in one run: throughput at batch 64, test accuracy
and file size of `nnc export --quantize int8` on the digits specs, each trained briefly here.

    python bench/quantize.py                      # digits_cnn and digits_mlp, 8 epochs, 5 s per model
    python bench/quantize.py --epochs 25 --seconds 20 --threads 1
    python bench/quantize.py --smoke              # 1 epoch, a fraction of a second: for CI

Each spec is trained by `nnc train` (a subprocess, --epochs, no plots), its best checkpoint
exported and verified in memory by the code behind `nnc export`, and quantized by the code behind
`--quantize int8` (runtime/quantize.py: static QDQ for the conv net, dynamic for the MLP). The two
models are timed by the code behind `nnc bench` (runtime/bench.py): blocks of calls alternating
between them after a pause, so that load on a shared machine lands on both. The headline ratio
is int8 / fp32 throughput from the median call (robust to the stalls a busy machine adds); the
ratio of mean throughputs, which such stalls dominate, is printed beside it.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from nnc.compiler.opsets import DEFAULT_OPSET
from nnc.runtime import artifacts
from nnc.runtime.bench import Engines, onnx_engine, run_bench
from nnc.runtime.data import load_splits
from nnc.runtime.export import export_artifact
from nnc.runtime.quantize import quantize

ROOT = Path(__file__).resolve().parents[1]


def train(spec: str, epochs: int, out: Path) -> Path:
    r = subprocess.run([sys.executable, "-m", "nnc.cli", "train", str(ROOT / "specs" / f"{spec}.nnspec"), "--epochs",
                        str(epochs), "--out", str(out), "--device", "cpu", "-q", "--plots", "off"],
                       capture_output=True, text=True)
    if r.returncode:
        sys.exit(f"nnc train {spec} failed:\n{r.stderr}")
    return out / "best.safetensors"


def measure(spec: str, ckpt: Path, batch: int, seconds: float, threads: int | None) -> dict:
    art = artifacts.load(str(ckpt))
    fp32 = export_artifact(art, None, DEFAULT_OPSET, False).model
    q = quantize(art.graph, fp32, load_splits(art.graph))
    data = fp32.SerializeToString()
    e = Engines({"fp32": onnx_engine(data, spec, threads), "int8": onnx_engine(q.data, spec, threads)}, threads)
    rows = {r["engine"]: r for r in run_bench(e, (batch,), seconds)}
    return {"spec": spec, "method": q.method, "rows": rows, "acc": (q.fp32["accuracy"], q.int8["accuracy"]),
            "bytes": (len(data), len(q.data)), "n": q.n}


def report(m: dict, batch: int) -> None:
    f, i = m["rows"]["fp32"], m["rows"]["int8"]
    print(f"\n{m['spec']} (int8 {m['method']}), batch {batch}, {f['calls']} / {i['calls']} calls:")
    print(f"  {'':6} {'examples/s':>12} {'p50 ms':>8} {'p90 ms':>8} {'test acc':>9} {'size KB':>8}")
    for name, r, acc, size in (("fp32", f, m["acc"][0], m["bytes"][0]), ("int8", i, m["acc"][1], m["bytes"][1])):
        print(f"  {name:6} {r['per_second']:12,.0f} {r['p50_ms']:8.3f} {r['p90_ms']:8.3f} {100 * acc:8.2f}% "
              f"{size / 1024:8.0f}")
    print(f"  int8 / fp32 throughput ({m['spec']}): {f['p50_ms'] / i['p50_ms']:.2f} by median call, "
          f"{i['per_second'] / f['per_second']:.2f} by mean; accuracy "
          f"{100 * (m['acc'][1] - m['acc'][0]):+.2f} points on {m['n']} test examples; "
          f"{m['bytes'][0] / m['bytes'][1]:.1f}x smaller")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--specs", nargs="+", default=["digits_cnn", "digits_mlp"])
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=5.0, help="timing per model and spec")
    ap.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads (default: its own)")
    ap.add_argument("--smoke", action="store_true", help="1 epoch, 0.2 s: that it runs, not what it measures")
    a = ap.parse_args()
    if a.smoke:
        a.epochs, a.seconds = 1, 0.2
    with tempfile.TemporaryDirectory(prefix="nnc-bench-quantize-") as tmp:
        for spec in a.specs:
            ckpt = train(spec, a.epochs, Path(tmp) / spec)
            report(measure(spec, ckpt, a.batch, a.seconds, a.threads), a.batch)


if __name__ == "__main__":
    main()
