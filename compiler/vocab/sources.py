"""The data-source registry: each word loads (x, y, class names) as numpy arrays.

Everything is loaded into memory once; training batches by slicing tensors. No source
downloads anything: the embedded default is scikit-learn's digits, read from the file it ships.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from pydantic import Field, field_validator

from nnc.compiler.vocab.registry import NoParams, Params, Registry
from nnc.diagnostics import NncError

if TYPE_CHECKING:  # annotations only: numpy is imported inside each loader, so that `nnc check`,
    import numpy as np  # which reads this registry, stays light

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})


@dataclass
class Arrays:
    x: np.ndarray  # (N, ...) float32
    y: np.ndarray  # (N,) int64 labels, or (N, ...) float32 targets
    classes: list[str] | None = None



class Npz(Params):
    path: str
    x: str = "x"
    y: str = "y"


class Npy(Params):
    x: str
    y: str


class Csv(Params):
    path: str
    label: str | int = -1  # a column name (with a header row) or index
    header: bool = True

    @field_validator("label", mode="before")
    @classmethod
    def _name_or_index(cls, v):  # one message, not one per member of the union
        if isinstance(v, bool) or not isinstance(v, (str, int)):
            from nnc.compiler.values import format_value

            raise ValueError(f"label must be a column name (a string) or a column index (a whole number), "
                             f"got {format_value(v)}")
        return v


class ImageFolder(Params):
    path: str


class Synthetic(Params):
    n: int = Field(512, ge=2)
    classes: int | None = Field(None, ge=2)  # default: the model's output width
    seed: int = Field(0, ge=0)  # numpy's generators take no negative seed


class TorchvisionSet(Params):
    root: str


@dataclass(frozen=True)
class SourceDef:
    kind: str
    params: type[Params]
    load: Callable[[Params, tuple[int, ...], int], Arrays]  # (params, input dims, outputs) -> arrays
    doc: str
    # the largest pixel value of its images (digits 16, image files 255): `nnc infer` rescales image
    # files to it. None where the source holds whatever the user gave (arrays, csv, synthetic)
    pixel_max: float | None = None
    paths: tuple[str, ...] = ()  # the options that name files: relative ones are read beside the spec
    # what a fixed data set is, known without reading it (`nnc check` compares the model with it):
    # its examples' shape (C, H, W) and its class count
    example: tuple[int, ...] | None = None
    classes: int | None = None


def _missing(path: str, what: str) -> NncError:
    if Path(path).is_dir():
        return NncError(f"{what} '{path}' is a folder; give the file inside it")
    return NncError(f"{what} '{path}' does not exist")


def _np_load(path: str, kind: str):
    """np.load of a file the user named as `kind` ("npz" or "npy"), with numpy's failures
    (a truncated file, pickled data, the other format) said in the user's terms."""
    import numpy as np
    if not Path(path).is_file():
        raise _missing(path, f"{kind} file")
    try:
        got = np.load(path, allow_pickle=False)
    except EOFError:
        raise NncError(f"{path}: empty file; expected a .{kind} written by numpy.{'savez' if kind == 'npz' else 'save'}") from None
    except (ValueError, OSError) as e:
        # numpy falls back to unpickling whatever is not .npy/.npz; with pickling off that says
        # "allow_pickle", which would invite loading untrusted code
        why = "not a numpy file" if "pickle" in str(e) else str(e)
        raise NncError(f"{path}: cannot read as .{kind} ({why})") from None
    if (kind == "npz") != isinstance(got, np.lib.npyio.NpzFile):
        other = "npy" if kind == "npz" else "npz"
        if kind == "npy":
            got.close()
        raise NncError(f"{path}: this is a .{other} file, not a .{kind}")
    return got


def _digits(p, dims, outputs) -> Arrays:
    """scikit-learn's `load_digits`, read from the CSV it ships without importing scikit-learn
    (its import costs ~1.3 s, the read ~15 ms; the arrays are identical, tests/test_train.py)."""
    import gzip
    import importlib.util

    import numpy as np

    spec = importlib.util.find_spec("sklearn")  # finds the package without importing it
    csv = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz" if spec else None
    if csv is None or not csv.is_file():  # a scikit-learn that keeps it elsewhere: ask it
        from sklearn.datasets import load_digits

        d = load_digits()
        return Arrays(d.data.astype(np.float32), d.target.astype(np.int64), [str(c) for c in d.target_names])
    with gzip.open(csv, "rt") as f:
        a = np.loadtxt(f, delimiter=",", dtype=np.float64)
    return Arrays(a[:, :-1].astype(np.float32), a[:, -1].astype(np.int64), [str(c) for c in range(10)])


def _labels(y: np.ndarray) -> tuple[np.ndarray, list[str] | None]:
    import numpy as np
    if y.dtype.kind in "USO":
        names = sorted(set(y.tolist()))
        index = {n: i for i, n in enumerate(names)}
        return np.array([index[v] for v in y.tolist()], np.int64), [str(n) for n in names]
    if y.dtype.kind in "iub":
        return y.astype(np.int64), None
    return y.astype(np.float32), None


def _npz(p: Npz, dims, outputs) -> Arrays:
    import numpy as np
    with _np_load(p.path, "npz") as f:
        missing = [k for k in (p.x, p.y) if k not in f.files]
        if missing:
            raise NncError(f"{p.path}: no array named {missing[0]!r} (it has {', '.join(f.files) or 'none'})")
        try:
            x, y = f[p.x], f[p.y]
        except (ValueError, OSError) as e:
            raise NncError(f"{p.path}: cannot read as .npz ({e})") from None
    y, names = _labels(y)
    return Arrays(x.astype(np.float32), y, names)


def _npy(p: Npy, dims, outputs) -> Arrays:
    import numpy as np
    arrays = []
    for path in (p.x, p.y):
        arrays.append(_np_load(path, "npy"))
    y, names = _labels(arrays[1])
    return Arrays(arrays[0].astype(np.float32), y, names)


def _csv(p: Csv, dims, outputs) -> Arrays:
    import csv

    import numpy as np

    if not Path(p.path).is_file():
        raise _missing(p.path, "csv file")
    try:
        with open(p.path, newline="") as f:
            reader = csv.reader(f)
            numbered = [(reader.line_num, r) for r in reader if r]
    except UnicodeDecodeError:
        raise NncError(f"{p.path}: not a text file; a csv source reads comma-separated numbers") from None
    if not numbered:
        raise NncError(f"{p.path}: empty csv file")
    header = numbered.pop(0)[1] if p.header else None
    if not numbered:
        raise NncError(f"{p.path}: a header and no rows")
    width = len(header or numbered[0][1])
    for line, r in numbered:
        if len(r) != width:
            raise NncError(f"{p.path}: line {line} has {len(r)} columns, the "
                           f"{'header' if header else 'first line'} has {width}")
    rows = [r for _, r in numbered]
    col = p.label
    if isinstance(col, str):
        if header is None or col not in header:
            raise NncError(f"{p.path}: no column named {col!r}" + (f" (columns: {', '.join(header)})" if header else ""))
        col = header.index(col)
    if not -width <= col < width:
        raise NncError(f"{p.path}: label column {col} is out of range: the file has {width} columns "
                       f"(0 to {width - 1}, or -1 for the last)")
    col %= width
    try:
        x = np.array([[float(v) for i, v in enumerate(r) if i != col] for r in rows], np.float32)
    except ValueError as e:
        raise NncError(f"{p.path}: a feature is not a number ({e})") from None
    raw = np.array([r[col] for r in rows])
    try:
        y = raw.astype(np.float64)
        y = y.astype(np.int64) if np.all(y == np.round(y)) else y.astype(np.float32)
        names = None
    except ValueError:
        y, names = _labels(raw)
    return Arrays(x, y, names)


def _imagefolder(p: ImageFolder, dims, outputs) -> Arrays:
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    root = Path(p.path)
    if not root.is_dir():
        raise _missing(p.path, "image folder")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    if not classes:
        raise NncError(f"{p.path}: no class folders inside (expected {p.path}/<class>/<image>)")
    c, h, w = dims
    xs, ys = [], []
    for label, name in enumerate(classes):
        # images by their suffix: a README.txt or .DS_Store beside them is not a broken image
        for f in sorted((root / name).iterdir()):
            if not f.is_file() or f.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:
                with Image.open(f) as im:
                    xs.append(load_image(im, c, h, w))
            except (UnidentifiedImageError, OSError):
                raise NncError(f"{f}: not an image Pillow can read") from None
            ys.append(label)
    empty = [n for n in classes if n not in {classes[y] for y in ys}]
    if empty:
        raise NncError(f"{p.path}: no images in {', '.join(empty[:5])}{' ...' if len(empty) > 5 else ''} "
                       f"(read: {', '.join(sorted(IMAGE_SUFFIXES))})")
    return Arrays(np.stack(xs), np.array(ys, np.int64), classes)


def load_image(im, c: int, h: int, w: int) -> np.ndarray:
    """A Pillow image -> (C, H, W) float32 in [0, 255], resized to the spec's input."""
    import numpy as np
    from PIL import Image

    if im.mode.startswith("I;16") or im.mode == "I":  # 16-bit grey (Pillow reads such PNGs as I;16 or I):
        # scaled to 0..255 (Pillow's convert("L") would clip every value above 255 to white)
        a = np.asarray(Image.fromarray(np.asarray(im, np.float32) * (255 / 65535)).resize((w, h)), np.float32)
        return a[None] if c == 1 else np.repeat(a[None], c, 0)
    im = im.convert("L" if c == 1 else "RGB").resize((w, h))
    a = np.asarray(im, dtype=np.float32)
    return a[None] if c == 1 else a.transpose(2, 0, 1)


def _synthetic(p: Synthetic, dims, outputs) -> Arrays:
    import numpy as np

    rng = np.random.default_rng(p.seed)
    classes = p.classes or outputs
    return Arrays(rng.standard_normal((p.n, *dims), dtype=np.float32), rng.integers(0, classes, p.n, dtype=np.int64),
                  [str(i) for i in range(classes)])


def _memory(p: NoParams, dims, outputs) -> Arrays:
    raise NncError("this spec's data is handed over in memory by the Python API (nnc.train(spec, data=(x, y))), "
                   "so there is nothing here to read it from; write a data source in the spec's data section "
                   "(npz, csv, imagefolder, ...) to use it from the command line")


def _torchvision(name: str):
    def load(p: TorchvisionSet, dims, outputs) -> Arrays:
        import numpy as np

        try:
            import torchvision.datasets as tvd
        except ImportError:
            raise NncError(f"the {name} source needs torchvision: pip install 'nnc[vision]'") from None
        except Exception as e:  # e.g. a torchvision built for another torch: "operator torchvision::nms does not exist"
            import torch

            raise NncError(f"the {name} source needs torchvision, which is installed but fails to import "
                           f"({type(e).__name__}: {e}); it must be the build that matches torch {torch.__version__}") from None
        cls = {"cifar10": tvd.CIFAR10, "mnist": tvd.MNIST, "fashion_mnist": tvd.FashionMNIST}[name]
        try:
            parts = [cls(p.root, train=t, download=False) for t in (True, False)]
        except RuntimeError as e:
            raise NncError(f"{name}: files not found under {p.root!r} ({e}); nnc never downloads, "
                           "place the dataset there first") from None
        x = np.concatenate([np.asarray(s.data) for s in parts]).astype(np.float32)
        x = x.transpose(0, 3, 1, 2) if x.ndim == 4 else x[:, None]
        y = np.concatenate([np.asarray(s.targets) for s in parts]).astype(np.int64)
        return Arrays(x, y, list(parts[0].classes))
    return load


SOURCES = Registry("data source", (
    SourceDef("digits", NoParams, _digits, "scikit-learn's 8x8 handwritten digits (1797 images, 10 classes, values 0-16)", 16.0,
              example=(1, 8, 8), classes=10),
    SourceDef("npz", Npz, _npz, "arrays x and y from an .npz file", paths=("path",)),
    SourceDef("npy", Npy, _npy, "x and y from two .npy files", paths=("x", "y")),
    SourceDef("csv", Csv, _csv, "a table of numbers with one label column", paths=("path",)),
    SourceDef("imagefolder", ImageFolder, _imagefolder, "a folder of class folders of images (Pillow), resized to the input", 255.0,
              ("path",)),
    SourceDef("synthetic", Synthetic, _synthetic, "random normal inputs and random labels of the spec's shapes"),
    SourceDef("memory", NoParams, _memory, "arrays handed over by the Python API: nnc.train(spec, data=(x, y))"),
    SourceDef("cifar10", TorchvisionSet, _torchvision("cifar10"), "CIFAR-10 from a local root (torchvision)",
              255.0, ("root",), example=(3, 32, 32), classes=10),
    SourceDef("mnist", TorchvisionSet, _torchvision("mnist"), "MNIST from a local root (torchvision)",
             
              255.0, ("root",), example=(1, 28, 28), classes=10),
    SourceDef("fashion_mnist", TorchvisionSet, _torchvision("fashion_mnist"), "Fashion-MNIST from a local root (torchvision)",
             
              255.0, ("root",), example=(1, 28, 28), classes=10),
))
