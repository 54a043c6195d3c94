"""`nnc ensemble CKPT...`: the average of several models' class probabilities (and its ONNX graph)."""

from __future__ import annotations

import json

from nnc.commands.options import add_allow_read


def run(args) -> int:
    from nnc.runtime.ensemble import evaluate_ensemble, export_onnx
    from nnc.runtime.export import check_out_path

    if args.output:
        check_out_path(args.output)  # before the evaluation, not after it
    allow = tuple(args.allow_read)
    res = evaluate_ensemble(args.checkpoints, args.split, allow)
    if args.output:
        res["onnx"] = export_onnx(args.checkpoints, args.output, args.split, allow)
    if args.json:
        print(json.dumps(res))
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    table = Table(title=f"{args.split} split, {res['n']} examples")
    table.add_column("model")
    table.add_column("accuracy", justify="right")
    table.add_column("loss", justify="right")
    for m in res["members"]:
        table.add_row(m["checkpoint"], f"{100 * m['accuracy']:.2f}%", f"{m['loss']:.4f}")
    table.add_row("mean of members", f"{100 * res['mean_accuracy']:.2f}%", "", end_section=True)
    table.add_row(f"ensemble of {len(res['members'])}", f"{100 * res['accuracy']:.2f}%", f"{res['loss']:.4f}")
    console.print(table)
    if args.output:
        o = res["onnx"]
        console.print(f"wrote {o['path']} with {o['exporter']} (onnxruntime matches PyTorch on {o['checked_on']} "
                      f"{args.split} examples: max |diff| {o['max_abs_diff']:.2e})", soft_wrap=True)
    return 0


def register(sub) -> None:
    p = sub.add_parser("ensemble", help="evaluate (and export) the average of models' predicted probabilities")
    p.add_argument("checkpoints", nargs="+", metavar="CKPT")
    p.add_argument("-o", "--output", metavar="FILE.onnx", help="export the ensemble as one ONNX graph")
    p.add_argument("--split", choices=("test", "val", "train"), default="test")
    add_allow_read(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)
