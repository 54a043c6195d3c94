"""`nnc export CHECKPOINT_OR_SPEC`: a verified ONNX graph, preprocessing inside."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from nnc.commands.options import add_allow_read, add_set, usage


def _default_out(path: str, suffix: str) -> str:
    return str(Path(path).with_suffix(suffix).name)


def max_drop(text: str) -> float:
    """--max-drop: accuracy points (a float; `inf` accepts any int8 model, a negative limit demands a gain)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected accuracy points such as 1, 2.5 or inf, got {text!r}") from None
    if math.isnan(value):
        raise argparse.ArgumentTypeError("expected accuracy points such as 1, 2.5 or inf, got nan")
    return value


def run(args) -> int:
    from nnc.compiler.onnx_graph import bare_preprocessing_warning
    from nnc.runtime import artifacts
    from nnc.runtime.export import check_opset, check_out_path, export_artifact, export_int8

    if args.max_drop is not None and not args.quantize:
        raise usage("--max-drop judges an int8 model: give it with --quantize int8")
    if args.allow_read and not args.quantize:
        raise usage("--allow-read is for --quantize int8 (which scores the model on its data); a plain export reads none")
    check_opset(args.opset)  # before anything is built
    out = args.output or _default_out(args.artifact, ".onnx")
    check_out_path(out)
    art = artifacts.load(args.artifact, overrides=tuple(args.set))
    limit = 1.0 if args.max_drop is None else args.max_drop
    if args.quantize:
        result, q = export_int8(art, out, args.opset, args.probabilities, limit, tuple(args.allow_read))
    else:
        result, q = export_artifact(art, out, args.opset, args.probabilities), None
    graph = art.graph
    if art.kind == artifacts.SPEC:
        print(f"warning: {args.artifact} is a bare spec: exporting its freshly initialized weights "
              "(export a checkpoint from `nnc train` for trained ones)", file=sys.stderr)
        note = bare_preprocessing_warning(graph)
        if note:
            print(f"warning: {note}", file=sys.stderr)
    worst = max(r["max_abs"] for r in result.check.values())
    print(f"wrote {out}: {graph.spec.model.name}, input {graph.spec.model.input} -> {result.output} "
          f"{graph.output}; onnxruntime matches PyTorch at batch sizes "
          f"{', '.join(map(str, result.check))} (max abs error {worst:.2g})")
    if q is not None:
        from nnc.runtime.quantize import summary

        print(summary(q, limit))
    return 0


def register(sub) -> None:
    from nnc.compiler.opsets import DEFAULT_OPSET

    p = sub.add_parser("export", help="a verified ONNX graph from a checkpoint or spec (preprocessing inside)")
    p.add_argument("artifact", metavar="CHECKPOINT_OR_SPEC")
    p.add_argument("-o", "--output", metavar="MODEL.onnx", help="default: the source's name with .onnx, here")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    p.add_argument("--probabilities", action="store_true", help="end with softmax; the output is `probabilities`")
    p.add_argument("--quantize", choices=("int8",), help="int8 weights (and activations, for conv nets) by "
                   "onnxruntime's quantizer; written only if its held-out accuracy holds (--max-drop)")
    p.add_argument("--max-drop", type=max_drop, metavar="POINTS", help="with --quantize: the most accuracy points "
                   "the int8 model may lose against fp32 on the test split (default 1; inf: any)")
    add_allow_read(p)
    add_set(p, bare_specs_only=True)
    p.set_defaults(func=run)
