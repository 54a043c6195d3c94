"""`nnc infer MODEL.onnx INPUT...`: onnxruntime predictions on arrays, image files or folders."""

from __future__ import annotations

import json
import sys

from nnc.commands.options import count


def run(args) -> int:
    import numpy as np

    from nnc.diagnostics import printable
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
    for r in records:  # labels come from the model's metadata, names from the file system: printed inert
        if "values" in r:  # a regression model: what it predicts, not a class
            shown = ", ".join(f"{v:.6g}" for v in np.ravel(r["values"]))
        else:
            shown = ", ".join(f"{printable(t['label'])} {t['probability']:.3f}" for t in r["top"])
        print(f"{printable(r['input'])}: {shown}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("infer", help="predict with an exported ONNX model (onnxruntime) on arrays or images")
    p.add_argument("model", metavar="MODEL.onnx")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help=".npy/.npz arrays, image files or folders of images")
    p.add_argument("--json", action="store_true", help="one JSON object with every prediction")
    p.add_argument("--top", type=count(1), default=1, metavar="K", help="show the K most likely classes")
    p.add_argument("--provider", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--batch", type=count(1), default=64, metavar="N", help="examples per onnxruntime call")
    p.set_defaults(func=run)
