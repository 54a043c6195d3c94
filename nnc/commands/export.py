"""`nnc export CHECKPOINT_OR_SPEC`: a verified ONNX graph, preprocessing inside."""

from __future__ import annotations

import sys
from pathlib import Path

from nnc.commands.options import add_set


def _default_out(path: str, suffix: str) -> str:
    return str(Path(path).with_suffix(suffix).name)


def run(args) -> int:
    from nnc.compiler.onnx_graph import bare_preprocessing_warning
    from nnc.runtime import artifacts
    from nnc.runtime.export import check_opset, check_out_path, export_artifact

    check_opset(args.opset)  # before anything is built
    out = args.output or _default_out(args.artifact, ".onnx")
    check_out_path(out)
    art = artifacts.load(args.artifact, overrides=tuple(args.set))
    result = export_artifact(art, out, args.opset, args.probabilities)
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
    return 0


def register(sub) -> None:
    from nnc.compiler.opsets import DEFAULT_OPSET

    p = sub.add_parser("export", help="a verified ONNX graph from a checkpoint or spec (preprocessing inside)")
    p.add_argument("artifact", metavar="CHECKPOINT_OR_SPEC")
    p.add_argument("-o", "--output", metavar="MODEL.onnx", help="default: the source's name with .onnx, here")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    p.add_argument("--probabilities", action="store_true", help="end with softmax; the output is `probabilities`")
    add_set(p, bare_specs_only=True)
    p.set_defaults(func=run)
