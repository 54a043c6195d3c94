"""`nnc bench MODEL.onnx|CHECKPOINT`: latency percentiles and throughput of the user's own model,
onnxruntime beside PyTorch eager (and an int8 model), at batch 1 and a chosen batch."""

from __future__ import annotations

import argparse
import json
import math

from nnc.commands.options import count


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (0 < value < math.inf):
        raise argparse.ArgumentTypeError(f"expected seconds > 0, such as 0.5 or 2, got {text!r}")
    return value


def run(args) -> int:
    from rich import box
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from nnc.runtime.bench import engines, machine_load, run_bench, threads_in_use

    e = engines(args.model, args.threads, args.int8, args.opset)
    rows = run_bench(e, (1, args.batch), args.seconds)
    if args.json:
        print(json.dumps({"model": args.model, "threads": threads_in_use(e), "rows": rows}, allow_nan=False))
        return 0
    threads = ", ".join(f"{k} {v}" for k, v in threads_in_use(e).items())
    table = Table(title=f"{escape(args.model)}: milliseconds per call, CPU", header_style="bold", box=box.SIMPLE)
    for col in ("engine", "batch", "calls", "p50", "p90", "p99", "examples/s", "vs fp32"):
        table.add_column(col, justify="left" if col == "engine" else "right")
    base = {r["batch"]: r["per_second"] for r in rows if r["engine"] == "ort fp32"}
    for r in rows:
        table.add_row(r["engine"], str(r["batch"]), str(r["calls"]), f"{r['p50_ms']:.3f}", f"{r['p90_ms']:.3f}",
                      f"{r['p99_ms']:.3f}", f"{r['per_second']:,.0f}", f"{r['per_second'] / base[r['batch']]:.2f}x")
    console = Console(highlight=False)
    console.print(table)
    console.print(f"threads: {threads}. The engines take turns in short blocks, so outside load lands on each alike; "
                  "compare the ratios, and give --seconds more for steadier numbers.")
    if busy := machine_load():
        console.print(f"[yellow]note:[/] {busy}")
    return 0


def register(sub) -> None:
    from nnc.compiler.opsets import DEFAULT_OPSET

    p = sub.add_parser("bench", help="time your model: onnxruntime vs PyTorch eager (and int8), latency and throughput")
    p.add_argument("model", metavar="MODEL.onnx|CHECKPOINT",
                   help="an .onnx file (onnxruntime only), or a checkpoint or spec (exported in memory, and eager)")
    p.add_argument("--batch", type=count(1), default=64, metavar="N", help="the batch timed beside batch 1 (default 64)")
    p.add_argument("--threads", type=count(1), metavar="N", help="intra-op threads for both libraries (default: theirs)")
    p.add_argument("--int8", metavar="OTHER.onnx", help="an int8 model (nnc export --quantize int8) timed beside")
    p.add_argument("--seconds", type=seconds, default=1.0, metavar="S",
                   help="time per engine and batch size (default 1)")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="for a checkpoint: the opset of its export")
    p.add_argument("--json", action="store_true", help="one JSON object with every row")
    p.set_defaults(func=run)
