"""`nnc infer`: run an exported model with onnxruntime on arrays or images. Inference needs
neither torch nor the spec: the graph carries the preprocessing and its metadata carries the
class names and input layout.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nnc.compiler.vocab.sources import IMAGE_SUFFIXES
from nnc.diagnostics import NncError

log = logging.getLogger(__name__)



# ---------------------------------------------------------------- inference


@dataclass
class Session:
    sess: object
    path: str
    input_name: str
    input_shape: tuple[int | None, ...]  # per example, without the batch axis; None: a named/unknown axis
    input_dtype: np.dtype
    classes: list[str] | None
    output: str
    provider: str
    pixel_max: float | None = None  # image files are rescaled from 0..255 to 0..pixel_max (None: unknown)
    data_source: str | None = None  # the training data's source word (nnc's metadata)
    vocab: int | None = None  # token inputs: ids must be below this
    predicts: str = "class"  # class (softmax over scores), labels (bce: a sigmoid per output) or values


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
    opts.log_severity_level = 4
    wanted = providers(provider)
    # onnxruntime-gpu lists CUDA even where its libraries are missing, logs an error (in red, on
    # stderr) and falls back to the CPU: silence its own logging; nnc says what matters below
    ort.set_default_logger_severity(4)
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
    if len(sess.get_inputs()) > 1:
        names = ", ".join(i.name for i in sess.get_inputs())
        raise NncError(f"{path}: the model reads {len(sess.get_inputs())} inputs ({names}); nnc infer feeds one: "
                       "run it with onnxruntime, feeding each input by its name")
    inp = sess.get_inputs()[0]
    meta = sess.get_modelmeta().custom_metadata_map
    classes = _json(meta.get("classes"))
    dtype = np.int64 if "int64" in inp.type else np.float32
    shape = tuple(d if isinstance(d, int) and d > 0 else None for d in inp.shape[1:])  # 'D', None: unknown
    pixel_max, vocab = _number(meta.get("pixel_max")), _number(meta.get("vocab"))
    return Session(sess, path, inp.name, shape, np.dtype(dtype), classes if isinstance(classes, list) else None,
                   sess.get_outputs()[0].name, sess.get_providers()[0], pixel_max, meta.get("data_source"),
                   int(vocab) if vocab else None,
                   meta.get("predicts") if meta.get("predicts") in ("class", "labels", "values") else "class")


def _json(text: str | None):
    try:
        return json.loads(text) if text else None
    except json.JSONDecodeError:
        return None


def _number(text: str | None) -> float | None:
    try:
        v = float(text) if text else None
    except ValueError:  # "unknown"
        return None
    return v if v is not None and np.isfinite(v) and v > 0 else None


def _fits(a_shape: tuple[int, ...], shape: tuple[int | None, ...]) -> bool:
    return len(a_shape) == len(shape) and all(d is None or d == n for n, d in zip(a_shape, shape))


def _show(shape: tuple[int | None, ...]) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def _as_batch(a: np.ndarray, shape: tuple[int | None, ...], what: str) -> np.ndarray:
    known = None not in shape
    numel = int(np.prod(shape)) if known else None
    if _fits(a.shape[1:], shape):
        return a
    if _fits(a.shape, shape):  # one example
        return a[None]
    if len(shape) == 3 and shape[0] == 1 and a.ndim == 3 and _fits(a.shape[1:], shape[1:]):
        return a[:, None]  # (N, H, W) grey images, like sklearn's digits.images: add the channel axis
    if known and a.ndim == 2 and a.shape[1] == numel:
        return a.reshape((len(a), *shape))
    dims = ", ".join("?" if d is None else str(d) for d in shape)
    flat = f" or (N, {numel})" if known and len(shape) > 1 else ""
    raise NncError(f"{what}: an array of shape {a.shape} does not fit the model's input {_show(shape)}; "
                   f"give (N, {dims}){flat}")


@dataclass
class Inputs:
    x: np.ndarray  # (N, *input)
    names: list[str]
    images: int = 0  # how many examples came from image files


def load_inputs(paths: list[str], s: Session) -> Inputs:
    """Arrays (.npy, .npz: its `x` or only array), image files or folders of images -> (N, *shape), names.

    Image files are read as 0..255 and rescaled to the pixel range the model was trained on
    (`s.pixel_max`, from nnc's metadata); arrays are taken as they are, like the training data."""
    xs, names, images = [], [], 0
    for path in paths:
        p = Path(path)
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise NncError(f"{path}: no image files in this folder")
            for f in files:
                xs.append(_image(f, s)[None])
                names.append(str(f))
            images += len(files)
        elif not p.is_file():
            raise NncError(f"{path}: no such file or folder")
        elif p.suffix.lower() in (".npy", ".npz"):
            a = _array(p)
            if a.size == 0:
                raise NncError(f"{path}: no examples in this array (shape {a.shape})")
            if a.dtype.kind not in "biuf":
                raise NncError(f"{path}: holds {'text' if a.dtype.kind in 'SU' else a.dtype} values, not numbers")
            a = _as_batch(a, s.input_shape, path)
            xs.append(_checked(a, s, path))
            names += [f"{path}[{i}]" for i in range(len(a))]
        else:
            xs.append(_image(p, s)[None])
            names.append(str(p))
            images += 1
    if not xs:
        raise NncError("no inputs given")
    return Inputs(np.concatenate([x.astype(s.input_dtype) for x in xs]), names, images)


def _checked(a: np.ndarray, s: Session, path: str) -> np.ndarray:
    """Numbers the model can take (a: (N, *input)): finite floats, or whole token ids in [0, vocab)."""
    bad = ~np.isfinite(a) if a.dtype.kind == "f" else np.zeros(a.shape, bool)
    if bad.any():
        i = int(np.argwhere(bad)[0][0])
        raise NncError(f"{path}: {int(bad.sum())} NaN or infinite value(s), the first in example {i} ({path}[{i}]); "
                       "the model needs finite numbers")
    if s.input_dtype.kind != "i":
        return a
    vocab = f"[0, {s.vocab})" if s.vocab else "[0, vocabulary size)"
    if a.dtype.kind == "f" and (a != np.round(a)).any():
        i = int(np.argwhere(a != np.round(a))[0][0])
        raise NncError(f"{path}: token ids must be whole numbers in {vocab}; example {i} has a fraction")
    if a.size and (a.min() < 0 or (s.vocab and a.max() >= s.vocab)):
        raise NncError(f"{path}: token ids must be whole numbers in {vocab}; found {a.min():g}..{a.max():g}")
    return a


def _array(p: Path) -> np.ndarray:
    from nnc.compiler.vocab.sources import npy_claim

    try:
        if p.suffix.lower() == ".npy":  # a header may claim more than the file holds: refuse before allocating
            with open(p, "rb") as f:
                npy_claim(f, str(p), "the array", p.stat().st_size)
        data = np.load(p, allow_pickle=False)
        if isinstance(data, np.ndarray):
            return data
        with data:
            keys = list(data.keys())
            key = "x" if "x" in keys else keys[0] if len(keys) == 1 else None
            if key is None:
                raise NncError(f"{p}: an .npz with arrays {keys}; name the inputs `x`")
            if f"{key}.npy" in data.zip.namelist():
                with data.zip.open(f"{key}.npy") as f:
                    npy_claim(f, str(p), f"array {key!r}", data.zip.getinfo(f"{key}.npy").file_size)
            return data[key]
    except (ValueError, OSError, EOFError) as e:
        raise NncError(f"{p}: not a readable numpy file ({e})") from None
    except MemoryError as e:
        raise NncError(f"{p}: too large to load into memory ({e})") from None


def _image(p: Path, s: Session) -> np.ndarray:
    """(C, H, W) float32 on the training data's scale: 0..255 from Pillow, times pixel_max / 255."""
    from nnc.compiler.vocab.sources import read_image

    shape = s.input_shape
    if len(shape) != 3 or s.input_dtype.kind == "i":
        raise NncError(f"{p}: the model reads {_show(shape)}, not images; give .npy or .npz arrays")
    if None in shape:
        raise NncError(f"{p}: the model's input {_show(shape)} has axes of unknown size; give .npy or .npz arrays")
    x = read_image(p, *shape)
    return x * np.float32(s.pixel_max / 255.0) if s.pixel_max else x


def image_scale(s: Session) -> dict:
    """How image files were read, for the output: the pixel range and where it comes from."""
    if s.pixel_max:
        return {"pixel_max": s.pixel_max, "source": s.data_source,
                "note": f"image files rescaled from 0..255 to 0..{s.pixel_max:g}, the scale of the "
                        f"{s.data_source or 'training'} data the model was trained on"}
    return {"pixel_max": None, "source": s.data_source,
            "note": "the model does not record the pixel scale of its training data"
                    + (f" (data source {s.data_source})" if s.data_source else "")
                    + "; image files were read as 0..255, which may not match it"}


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
    """One record per input: predicted class, its probability and the top-k list; for a regression
    model (metadata `predicts` values) the predicted values; for bce (labels) each output's
    probability of being on, independently (a sigmoid, not a softmax)."""
    out = run(s, x, batch)
    if not np.isfinite(out).all():
        i = int(np.argwhere(~np.isfinite(out.reshape(len(out), -1)))[0][0])
        raise NncError(f"{s.path}: the model's output for {names[i]} is not finite (NaN or infinite values)")
    if s.predicts == "values":
        return [{"input": name, "values": v.tolist()} for name, v in zip(names, out.astype(np.float64))]
    if out.ndim != 2:
        raise NncError(f"{s.path}: the model's output {out.shape[1:]} is not a vector of class scores")
    probs = (out if s.output == "probabilities" else 1 / (1 + np.exp(-out.astype(np.float64))) if s.predicts == "labels"
             else softmax(out.astype(np.float64)))
    k = max(1, min(top, probs.shape[1]))
    records = []
    for name, p in zip(names, probs):
        order = np.argsort(-p, kind="stable")[:k]
        label = [s.classes[i] if s.classes and i < len(s.classes) else str(i) for i in order]
        records.append({"input": name, "class": int(order[0]), "label": label[0], "probability": float(p[order[0]]),
                        "top": [{"class": int(i), "label": l, "probability": float(p[i])} for i, l in zip(order, label)]})
    return records
