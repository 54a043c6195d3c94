"""`nnc export`, `nnc infer`, `nnc compile`: ship a model (ONNX, onnxruntime, PyTorch source)."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _default_out(source: str, suffix: str) -> str:
    return str(Path(source).with_suffix(suffix).name)


def cmd_export(args) -> int:
    from nnc.compiler.onnx_graph import bare_preprocessing_warning
    from nnc.runtime import artifacts
    from nnc.runtime.export import check_opset, check_out_path, export_artifact

    check_opset(args.opset)  # before anything is built
    out = args.output or _default_out(args.source, ".onnx")
    check_out_path(out)
    src = artifacts.load(args.source, overrides=tuple(args.set))
    result = export_artifact(src, out, args.opset, args.probabilities)
    graph = src.graph
    if src.kind == artifacts.SPEC:
        print(f"warning: {args.source} is a bare spec: exporting its freshly initialized weights "
              "(export a checkpoint from `nnc train` for trained ones)", file=sys.stderr)
        note = bare_preprocessing_warning(graph)
        if note:
            print(f"warning: {note}", file=sys.stderr)
    worst = max(r["max_abs"] for r in result.check.values())
    print(f"wrote {out}: {graph.spec.model.name}, input {graph.spec.model.input} -> {result.output} "
          f"{graph.output}; onnxruntime matches PyTorch at batch sizes "
          f"{', '.join(map(str, result.check))} (max abs error {worst:.2g})")
    return 0


def cmd_infer(args) -> int:
    from nnc.runtime.infer import image_scale, load_inputs, open_model, predict

    s = open_model(args.model, args.provider)
    inputs = load_inputs(args.inputs, s)
    records = predict(s, inputs.x, inputs.names, args.top, args.batch)
    scale = image_scale(s) if inputs.images else None
    if args.json:
        out = {"model": args.model, "provider": s.provider, "predictions": records}
        if scale:
            out["image_scale"] = scale
        print(json.dumps(out, allow_nan=False))
        return 0
    if scale:
        print(f"{'note' if scale['pixel_max'] else 'warning'}: {scale['note']}", file=sys.stderr)
    for r in records:
        tops = ", ".join(f"{t['label']} {t['probability']:.3f}" for t in r["top"])
        print(f"{r['input']}: {tops}")
    return 0


def cmd_compile(args) -> int:
    from nnc.compiler.python_source import generate
    from nnc.diagnostics import NncError
    from nnc.runtime import artifacts

    text = generate(artifacts.load(args.source, overrides=tuple(args.set)).graph)
    if args.output in (None, "-"):
        sys.stdout.write(text)
        return 0
    out = Path(args.output)
    if out.is_dir():
        raise NncError(f"{out}: is a folder; give a file name for the source (e.g. {out / 'model.py'})")
    try:
        out.write_text(text)
    except OSError as e:
        raise NncError(f"{out}: cannot write the source ({e.strerror or e})") from None
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


def _positive_int(text: str) -> int:
    import argparse

    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {n}")
    return n


def register(sub) -> None:
    from nnc.compiler.opsets import DEFAULT_OPSET

    def spec_set(p):
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a spec field (bare specs only; repeatable)")

    p = sub.add_parser("export", help="a verified ONNX graph from a checkpoint or spec (preprocessing inside)")
    p.add_argument("source", metavar="CHECKPOINT_OR_SPEC")
    p.add_argument("-o", "--output", metavar="MODEL.onnx", help="default: the source's name with .onnx, here")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    p.add_argument("--probabilities", action="store_true", help="end with softmax; the output is `probabilities`")
    spec_set(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("infer", help="predict with an exported ONNX model (onnxruntime) on arrays or images")
    p.add_argument("model", metavar="MODEL.onnx")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help=".npy/.npz arrays, image files or folders of images")
    p.add_argument("--json", action="store_true", help="one JSON object with every prediction")
    p.add_argument("--top", type=_positive_int, default=1, metavar="K", help="show the K most likely classes")
    p.add_argument("--provider", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--batch", type=_positive_int, default=64, metavar="N", help="examples per onnxruntime call")
    p.set_defaults(func=cmd_infer)

    p = sub.add_parser("compile", help="standalone PyTorch source for a spec or checkpoint (same parameter names)")
    p.add_argument("source", metavar="SPEC_OR_CHECKPOINT")
    p.add_argument("-o", "--output", metavar="MODEL.py", help="default: standard output")
    spec_set(p)
    p.set_defaults(func=cmd_compile)
