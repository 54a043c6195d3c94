"""Deployment-side helpers: export a checkpoint or spec, and run an exported model with
onnxruntime on arrays or images. Inference needs neither torch nor the spec: the graph
carries the preprocessing and its metadata carries the class names and input layout.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nnc.compiler.diagnostics import NncError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


# ---------------------------------------------------------------- export


@dataclass
class Source:
    """What `nnc export` exports: a checkpoint's model and statistics, or a bare spec's fresh model."""

    graph: object  # shapes.Graph
    model: object  # torch module in eval mode
    stats: dict[str, np.ndarray]
    classes: list[str] | None
    is_checkpoint: bool


def load_source(path: str, overrides: tuple[str, ...] = ()) -> Source:
    from nnc.compiler.shapes import check
    from nnc.compiler.spec import load_spec
    from nnc.compiler.torch_build import build_model

    if path.endswith(".nnspec"):
        graph = check(load_spec(path, overrides))
        if graph.input != graph.spec.model.input:
            raise NncError(f"{path}: its preprocessing changes the input to {graph.input}, and a bare spec has no "
                           "fitted statistics; export a trained checkpoint instead")
        return Source(graph, build_model(graph).eval(), {}, None, False)
    from nnc.runtime import checkpoint

    ck = checkpoint.load(path)
    graph = check(ck.spec())
    model = build_model(graph)
    ck.check_against(graph, model)
    model.load_state_dict(ck.model)
    return Source(graph, model.eval(), dict(ck.preprocess), ck.classes, True)


def export_file(source: str, out: str, opset: int, probabilities: bool, overrides: tuple[str, ...] = ()):
    """(Source, onnx_export.Exported): verified, then written to `out`."""
    from nnc.compiler.onnx_export import check_opset, export

    check_opset(opset)  # before building anything
    src = load_source(source, overrides)
    return src, export(src.graph, src.model, src.stats, src.classes, out, opset, probabilities)


# ---------------------------------------------------------------- inference


@dataclass
class Session:
    sess: object
    path: str
    input_name: str
    input_shape: tuple[int, ...]  # per example, without the batch axis
    input_dtype: np.dtype
    classes: list[str] | None
    output: str
    provider: str


def providers(choice: str) -> list[str]:
    import onnxruntime as ort

    have = ort.get_available_providers()
    if choice == "cuda" and "CUDAExecutionProvider" not in have:
        raise NncError("--provider cuda: onnxruntime has no CUDA provider here "
                       f"(available: {', '.join(have)})")
    if choice in ("cuda", "auto") and "CUDAExecutionProvider" in have:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def open_model(path: str, provider: str = "auto") -> Session:
    import onnxruntime as ort

    p = Path(path)
    if not p.is_file():
        raise NncError(f"{path}: no such ONNX file")
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    wanted = providers(provider)
    # onnxruntime-gpu lists CUDA even where its libraries are missing, logs an error and falls
    # back to the CPU; keep that quiet for `auto` and say so for an explicit `--provider cuda`
    ort.set_default_logger_severity(4 if provider == "auto" else 3)
    try:
        sess = ort.InferenceSession(str(p), opts, providers=wanted)
    except NncError:
        raise
    except Exception as e:  # onnxruntime raises its own (Fail, InvalidProtobuf, InvalidGraph, ...)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise NncError(f"{path}: not a loadable ONNX model; the file may be truncated or corrupt ({first[:300]})") from None
    if provider == "cuda" and "CUDAExecutionProvider" not in sess.get_providers():
        raise NncError("--provider cuda: onnxruntime could not start its CUDA provider here (missing CUDA or "
                       "cuDNN libraries?); use --provider cpu or auto")
    inp = sess.get_inputs()[0]
    meta = sess.get_modelmeta().custom_metadata_map
    try:
        classes = json.loads(meta.get("classes", "null"))
    except json.JSONDecodeError:
        classes = None
    dtype = np.int64 if "int64" in inp.type else np.float32
    shape = tuple(int(d) for d in inp.shape[1:])
    return Session(sess, path, inp.name, shape, np.dtype(dtype), classes, sess.get_outputs()[0].name,
                   sess.get_providers()[0])


def _as_batch(a: np.ndarray, shape: tuple[int, ...], what: str) -> np.ndarray:
    numel = int(np.prod(shape))
    if a.shape[1:] == shape:
        return a
    if a.shape == shape:  # one example
        return a[None]
    if a.ndim == 2 and a.shape[1] == numel:
        return a.reshape((len(a), *shape))
    raise NncError(f"{what}: an array of shape {a.shape} does not fit the model's input {shape}; "
                   f"give (N, {', '.join(map(str, shape))}) or (N, {numel})")


def load_inputs(paths: list[str], shape: tuple[int, ...], dtype=np.float32) -> tuple[np.ndarray, list[str]]:
    """Arrays (.npy, .npz: its `x` or only array), image files or folders of images -> (N, *shape), names."""
    xs, names = [], []
    for path in paths:
        p = Path(path)
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise NncError(f"{path}: no image files in this folder")
            for f in files:
                xs.append(_image(f, shape)[None])
                names.append(str(f))
        elif not p.is_file():
            raise NncError(f"{path}: no such file or folder")
        elif p.suffix.lower() in (".npy", ".npz"):
            a = _array(p)
            a = _as_batch(a, shape, path)
            xs.append(a)
            names += [f"{path}[{i}]" for i in range(len(a))]
        else:
            xs.append(_image(p, shape)[None])
            names.append(str(p))
    if not xs:
        raise NncError("no inputs given")
    return np.concatenate([x.astype(dtype) for x in xs]), names


def _array(p: Path) -> np.ndarray:
    try:
        data = np.load(p, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise NncError(f"{p}: not a readable numpy file ({e})") from None
    if isinstance(data, np.ndarray):
        return data
    with data:
        keys = list(data.keys())
        key = "x" if "x" in keys else keys[0] if len(keys) == 1 else None
        if key is None:
            raise NncError(f"{p}: an .npz with arrays {keys}; name the inputs `x`")
        return data[key]


def _image(p: Path, shape: tuple[int, ...]) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    from nnc.runtime.sources import load_image

    if len(shape) != 3:
        raise NncError(f"{p}: the model reads {shape}, not images; give .npy or .npz arrays")
    try:
        with Image.open(p) as im:
            return load_image(im, *shape)
    except (UnidentifiedImageError, OSError):
        raise NncError(f"{p}: not an image Pillow can read") from None


def run(s: Session, x: np.ndarray, batch: int = 64) -> np.ndarray:
    """Model outputs for x (N, *input), `batch` examples per call."""
    x = _as_batch(x, s.input_shape, s.path)
    outs = []
    for i in range(0, len(x), batch):
        try:
            outs.append(s.sess.run(None, {s.input_name: np.ascontiguousarray(x[i:i + batch], s.input_dtype)})[0])
        except Exception as e:
            raise NncError(f"{s.path}: onnxruntime failed on inputs {x[i:i + batch].shape}: "
                           f"{str(e).splitlines()[0][:300]}") from None
    return np.concatenate(outs)


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def predict(s: Session, x: np.ndarray, names: list[str], top: int = 1, batch: int = 64) -> list[dict]:
    """One record per input: predicted class, its probability and the top-k list."""
    out = run(s, x, batch)
    if out.ndim != 2:
        raise NncError(f"{s.path}: the model's output {out.shape[1:]} is not a vector of class scores")
    probs = out if s.output == "probabilities" else softmax(out.astype(np.float64))
    k = max(1, min(top, probs.shape[1]))
    records = []
    for name, p in zip(names, probs):
        order = np.argsort(-p, kind="stable")[:k]
        label = [s.classes[i] if s.classes and i < len(s.classes) else str(i) for i in order]
        records.append({"input": name, "class": int(order[0]), "label": label[0], "probability": float(p[order[0]]),
                        "top": [{"class": int(i), "label": l, "probability": float(p[i])} for i, l in zip(order, label)]})
    return records
