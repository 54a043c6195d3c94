"""The data-source registry: each word loads (x, y, class names) as numpy arrays.

`load` reads a whole source into memory (training then batches by slicing tensors); the
sources that can be larger than memory also say how large they are without decoding
(`extent`: a folder's listing, an .npy header), and runtime/stream.py reads them example by
example instead (images decoded by worker processes, arrays through memory maps). Only the
standard library runs here at `nnc check` time. No source downloads anything: the embedded
default is scikit-learn's digits, read from the file it ships.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import math
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from pydantic import Field, field_validator, model_validator

from nnc.compiler.layers.base import Shape
from nnc.compiler.vocab.registry import NoParams, Params, Registry
from nnc.diagnostics import NncError

if TYPE_CHECKING:  # annotations only: numpy is imported inside each loader, so that `nnc check`,
    import numpy as np  # which reads this registry, stays light

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})


@dataclass
class Arrays:
    """A data source's examples in memory."""

    x: np.ndarray  # (N, ...) float32; a tuple of arrays for a model of several inputs (y: outputs)
    y: np.ndarray  # (N,) int64 labels, or (N, ...) float32 targets
    classes: list[str] | None = None
    # examples given as their own split (imagefolder(train=..., val=...)): split -> (start, end)
    parts: dict[str, tuple[int, int]] | None = None
    bad: list[tuple[int, str, str]] = field(default_factory=list)  # (index, file, why): unreadable, skipped


@dataclass(frozen=True)
class Extent:
    """What is known of a source's size without decoding it."""

    n: int | None  # examples (None: unknown until loaded)
    nbytes: int | None  # decoded into memory as float32
    what: str  # "1,797 examples", "12,000 images in 10 class folders"
    streams: str | None = None  # None: it can be streamed; else why not


class Npz(Params):
    path: str
    # array names; default "x" and "y", or, for a model of several inputs / outputs, their names.
    # Several: a tuple in the inputs' (outputs') order, x=("img", "meta")
    x: str | tuple[str, ...] | None = None
    y: str | tuple[str, ...] | None = None


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


class Shapes(Params):
    n: int = Field(512, ge=2)
    seed: int = Field(0, ge=0)
    noise: float = Field(0.1, ge=0)  # std of the gaussian noise added to every pixel


class ImageFolder(Params):
    path: str | None = None  # one folder, split by the data section's fractions
    train: str | None = None  # or folders per split: a split without one is taken from train
    val: str | None = None
    test: str | None = None

    @model_validator(mode="after")
    def _one_layout(self):
        if (self.path is None) == (self.train is None):
            raise ValueError("give one folder, imagefolder(\"DIR\"), or folders per split, "
                             "imagefolder(train=\"DIR\", val=\"DIR\", test=\"DIR\")")
        if self.path is not None and (self.val or self.test):
            raise ValueError("val= and test= folders go with train=, not with one folder")
        return self

    def folders(self) -> dict[str, str]:
        """split ("all", "train", "val", "test") -> folder, for those given."""
        if self.path is not None:
            return {"all": self.path}
        return {k: v for k, v in (("train", self.train), ("val", self.val), ("test", self.test)) if v}


class Synthetic(Params):
    n: int = Field(512, ge=2)
    classes: int | None = Field(None, ge=2)  # default: the model's output width
    seed: int = Field(0, ge=0)  # numpy's generators take no negative seed


class TorchvisionSet(Params):
    root: str


@dataclass(frozen=True)
class SourceDef:
    """One data source word."""

    kind: str
    params: type[Params]
    load: Callable[[Params, Shape, int], Arrays]  # (params, the model's input, outputs) -> arrays
    doc: str
    # the largest pixel value of its images (digits 16, image files 255): `nnc infer` rescales image
    # files to it. None where the source holds whatever the user gave (arrays, csv, synthetic)
    pixel_max: float | None = None
    paths: tuple[str, ...] = ()  # the options that name files: relative ones are read beside the spec
    # what a fixed data set is, known without reading it (`nnc check` compares the model with it):
    # its examples' shape (C, H, W) and its class count
    example: tuple[int, ...] | None = None
    classes: int | None = None
    # its size without decoding it (params with paths located, input dims) -> Extent; None: held in memory
    extent: Callable[[Params, tuple[int, ...]], Extent] | None = None
    streams: bool = False  # can be read example by example (runtime/stream.py) instead of whole


def _missing(path: str, what: str) -> NncError:
    if Path(path).is_dir():
        return NncError(f"{what} '{path}' is a folder; give the file inside it")
    return NncError(f"{what} '{path}' does not exist")


def npy_claim(f, path: str, what: str, size: int) -> None:
    """Read an .npy header from `f` (positioned at its start, `size` bytes long) and refuse, before
    numpy allocates (or maps) it, an array the file cannot hold: a header may claim any shape."""
    try:
        shape, descr, _ = _npy_header(f, path)
    except (NncError, IndexError, OSError, EOFError):
        return  # not an .npy header: numpy says so when it loads the file
    _fits(shape, descr, size - f.tell(), path, what)


def _fits(shape: tuple[int, ...], descr: str, have: int, path: str, what: str) -> None:
    kinds = {"f": "float", "i": "int", "u": "uint", "c": "complex", "b": "bool"}
    if descr[1:2] not in kinds or not descr[2:].isdigit():
        return  # (strings, objects, structured records: numpy's own checks apply)
    need = math.prod(shape) * int(descr[2:])
    if need > have:
        dtype = "bool" if descr[1] == "b" else f"{kinds[descr[1]]}{8 * int(descr[2:])}"
        raise NncError(f"{path}: the header of {what} says shape {tuple(shape)} of {dtype} ({need:,} bytes), but "
                       f"the file holds {max(have, 0):,} bytes of data: it is truncated or damaged")


def _claims(path: str, kind: str) -> None:
    """Every array in the .npy or .npz fits in its file (see npy_claim)."""
    import zipfile

    try:
        if kind == "npy":
            with open(path, "rb") as f:
                npy_claim(f, path, "the array", Path(path).stat().st_size)
            return
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                if info.filename.endswith(".npy"):
                    with z.open(info) as f:
                        npy_claim(f, path, f"array {info.filename[:-4]!r}", info.file_size)
    except (OSError, zipfile.BadZipFile, EOFError):
        return  # numpy names the problem when it loads the file


def numbers(a: np.ndarray, path: str, name: str) -> np.ndarray:
    """`a` as float32, or a user error naming the file when it holds text or other non-numbers."""
    import numpy as np

    if a.dtype.kind not in "biuf":
        kind = "text" if a.dtype.kind in "SU" else str(a.dtype)
        raise NncError(f"{path}: {name} holds {kind} values, not numbers")
    return a.astype(np.float32)


def np_load(path: str, kind: str):
    """np.load of a file the user named as `kind` ("npz" or "npy"), with numpy's failures
    (a truncated file, pickled data, the other format, a header claiming more than the file
    holds) said in the user's terms."""
    import numpy as np
    if not Path(path).is_file():
        raise _missing(path, f"{kind} file")
    _claims(path, kind)
    try:
        got = np.load(path, allow_pickle=False)
    except MemoryError as e:
        raise NncError(f"{path}: too large to load into memory ({e})") from None
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


def _digits(p, inp, outputs) -> Arrays:
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


def label_ids(y: np.ndarray) -> tuple[np.ndarray, list[str] | None]:
    import numpy as np
    if y.dtype.kind in "USO":
        names = sorted(set(y.tolist()))
        index = {n: i for i, n in enumerate(names)}
        return np.array([index[v] for v in y.tolist()], np.int64), [str(n) for n in names]
    if y.dtype.kind in "iub":
        return y.astype(np.int64), None
    return y.astype(np.float32), None


def _npz(p: Npz, inp, outputs) -> Arrays:
    (x,), (y,), names = read_npz(p, ["x"], ["y"])
    if isinstance(p.x, tuple) or isinstance(p.y, tuple):
        raise NncError(f"{p.path}: x and y name one array each for a model of one input and one output")
    return Arrays(x, y, names)


def read_npz(p: Npz, inputs: list[str], outputs: list[str]) -> tuple[list, list, list[str] | None]:
    """The arrays of an .npz for the model's inputs and outputs: named by `x` and `y` (one name,
    or a tuple of them in order), else by the inputs' and outputs' own names. Class names (string
    labels) come from the first output's labels."""
    def names(given, default):
        if given is None:
            return default
        got = (given,) if isinstance(given, str) else given
        if len(got) != len(default):
            raise NncError(f"{p.path}: {len(got)} array name(s) given for {len(default)} array(s): "
                           f"{', '.join(default)}")
        return list(got)

    xs, ys = names(p.x, inputs), names(p.y, outputs)
    with np_load(p.path, "npz") as f:
        missing = [k for k in (*xs, *ys) if k not in f.files]
        if missing:
            raise NncError(f"{p.path}: no array named {missing[0]!r} (it has {', '.join(f.files) or 'none'})")
        try:
            x, y = [f[k] for k in xs], [f[k] for k in ys]
        except (ValueError, OSError) as e:
            raise NncError(f"{p.path}: cannot read as .npz ({e})") from None
        except MemoryError as e:
            raise NncError(f"{p.path}: too large to load into memory ({e})") from None
    labels = [label_ids(a) for a in y]
    return [numbers(a, p.path, f"array {k!r}") for a, k in zip(x, xs)], [a for a, _ in labels], labels[0][1]


def _npy(p: Npy, inp, outputs) -> Arrays:
    arrays = []
    for path in (p.x, p.y):
        arrays.append(np_load(path, "npy"))
    y, names = label_ids(arrays[1])
    return Arrays(numbers(arrays[0], p.x, "the array"), y, names)


def _csv(p: Csv, inp, outputs) -> Arrays:
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
    except csv.Error as e:  # e.g. a field over csv's limit of 131,072 characters
        raise NncError(f"{p.path}: line {reader.line_num}: {e}; a csv source reads comma-separated numbers") from None
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
        y, names = label_ids(raw)
    return Arrays(x, y, names)


def list_folder(root: str) -> tuple[list[str], list[str], list[int]]:
    """(classes, files, labels) of `root/<class>/<image>`: class folders and files sorted by name,
    images recognized by their suffix (a README.txt or .DS_Store beside them is not a broken image)."""
    import os

    if not Path(root).is_dir():
        raise _missing(root, "image folder")
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir())
    if not classes:
        raise NncError(f"{root}: no class folders inside (expected {root}/<class>/<image>)")
    files, labels, empty = [], [], []
    for label, name in enumerate(classes):
        folder = os.path.join(root, name)
        names = sorted(e.name for e in os.scandir(folder)
                       if e.is_file() and os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES)
        files += [os.path.join(folder, n) for n in names]
        labels += [label] * len(names)
        if not names:
            empty.append(name)
    if empty:
        raise NncError(f"{root}: no images in {', '.join(empty[:5])}{' ...' if len(empty) > 5 else ''} "
                       f"(read: {', '.join(sorted(IMAGE_SUFFIXES))})")
    return classes, files, labels


@dataclass
class Listing:
    """An image folder's files, in a fixed order; `parts`: the ranges of splits given as folders."""

    classes: list[str]
    files: list[str]
    labels: list[int]
    parts: dict[str, tuple[int, int]] | None


def list_images(p: ImageFolder) -> Listing:
    folders = p.folders()
    if "all" in folders:
        return Listing(*list_folder(folders["all"]), None)
    classes, files, labels = list_folder(folders["train"])
    parts = {"train": (0, len(files))}
    for split in ("val", "test"):
        if split in folders:
            names, more, idx = list_folder(folders[split])
            foreign = [n for n in names if n not in classes]
            if foreign:
                raise NncError(f"{folders[split]}: class folder(s) {', '.join(foreign[:5])} are not in the "
                               f"training folder {folders['train']}")
            parts[split] = (len(files), len(files) + len(more))
            files += more
            labels += [classes.index(names[i]) for i in idx]
    return Listing(classes, files, labels, parts)


def unreadable(e: Exception) -> str:
    """Why Pillow could not read an image, in a few words (it raises OSError, SyntaxError,
    ValueError, EOFError, zlib's and struct's errors, DecompressionBombError, ...)."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(e, Image.DecompressionBombError):  # refused before decoding: a header may claim any size
        return f"too large an image to read ({str(e).rstrip('.')}); resize it first"
    if isinstance(e, MemoryError):
        return f"too large an image to read ({e})"
    return "not an image Pillow can read" if isinstance(e, UnidentifiedImageError) else f"{type(e).__name__}: {e}"


def _imagefolder(p: ImageFolder, inp: Shape, outputs) -> Arrays:
    """Every image decoded into one array; an unreadable one is left as zeros and listed in `bad`
    (runtime/data.py drops it and stops when there are too many)."""
    import numpy as np
    from PIL import Image

    listing = list_images(p)
    c, h, w = inp.dims
    x = np.zeros((len(listing.files), c, h, w), np.float32)
    bad = []
    for i, f in enumerate(listing.files):
        try:
            with Image.open(f) as im:
                x[i] = load_image(im, c, h, w)
        except Exception as e:  # noqa: BLE001 (Pillow's failures have no common base)
            bad.append((i, f, unreadable(e)))
    return Arrays(x, np.array(listing.labels, np.int64), listing.classes, listing.parts, bad)


def image_array(im, c: int, h: int, w: int, box: tuple[float, float, float, float] | None = None) -> np.ndarray:
    """A Pillow image -> (H, W, C) values in [0, 255]: uint8 for 8-bit images, float32 for 16-bit
    ones; the region `box` (x0, y0, x1, y1 in the file's pixels; default: all of it) resized to
    (h, w). A JPEG much larger than that is decoded at a reduced scale (Pillow's draft mode: the
    decoder skips what the resize would throw away)."""
    import math

    import numpy as np
    from PIL import Image

    w0, h0 = im.size
    box = box or (0.0, 0.0, float(w0), float(h0))
    if im.format == "JPEG":
        bw, bh = box[2] - box[0], box[3] - box[1]
        if im.draft(im.mode, (math.ceil(w * w0 / bw), math.ceil(h * h0 / bh))) is not None:
            sx, sy = im.size[0] / w0, im.size[1] / h0
            box = (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy)
    if im.mode.startswith("I;16") or im.mode == "I":  # 16-bit grey (Pillow reads such PNGs as I;16 or I):
        # scaled to 0..255 (Pillow's convert("L") would clip every value above 255 to white)
        a = np.asarray(Image.fromarray(np.asarray(im, np.float32) * (255 / 65535)).resize((w, h), box=box), np.float32)
        return a[:, :, None] if c == 1 else np.repeat(a[:, :, None], c, 2)
    a = np.asarray(im.convert("L" if c == 1 else "RGB").resize((w, h), box=box))
    return a[:, :, None] if c == 1 else a


def read_image(path: Path, c: int, h: int, w: int) -> np.ndarray:
    """An image file -> (C, H, W) float32 in [0, 255] (load_image), or a user error naming it."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return load_image(im, c, h, w)
    except Exception as e:  # noqa: BLE001 (Pillow's failures have no common base)
        raise NncError(f"{path}: {unreadable(e)}") from None


def load_image(im, c: int, h: int, w: int) -> np.ndarray:
    """A Pillow image -> (C, H, W) float32 in [0, 255], resized to the spec's input."""
    import numpy as np

    return np.ascontiguousarray(image_array(im, c, h, w).transpose(2, 0, 1), dtype=np.float32)


def _npy_header(f, name: str) -> tuple[tuple[int, ...], str, bool]:
    """(shape, dtype descr, fortran order) from an .npy header, read with the standard library."""
    import ast
    import struct

    if f.read(6) != b"\x93NUMPY":
        raise NncError(f"{name}: cannot read as .npy (not a numpy file)")
    major = f.read(2)[0]
    size = struct.unpack("<H", f.read(2))[0] if major == 1 else struct.unpack("<I", f.read(4))[0]
    try:
        d = ast.literal_eval(f.read(size).decode("latin1"))
        return tuple(d["shape"]), str(d["descr"]), bool(d["fortran_order"])
    except (ValueError, SyntaxError, KeyError, TypeError):
        raise NncError(f"{name}: cannot read as .npy (a damaged header)") from None


def _decoded(n: int, dims: tuple[int, ...]) -> int:
    return n * math.prod(dims) * 4


def _array_extent(shape, descr: str, fortran: bool, dims, name: str, streams: str | None = None) -> Extent:
    if not shape:
        raise NncError(f"{name}: a single number, not an array of examples")
    if descr.startswith(("|O", "O")):
        streams = "it holds Python objects"
    elif fortran and len(shape) > 1:
        streams = "it is stored in Fortran order (save np.ascontiguousarray(x))"
    return Extent(shape[0], _decoded(shape[0], dims), f"{shape[0]:,} examples of shape {tuple(shape[1:])}", streams)


def _npy_extent(p: Npy, dims) -> Extent:
    if not Path(p.x).is_file():
        raise _missing(p.x, "npy file")
    with open(p.x, "rb") as f:
        header = _npy_header(f, p.x)
        _fits(header[0], header[1], Path(p.x).stat().st_size - f.tell(), p.x, "the array")
    return _array_extent(*header, dims, p.x)


def array_name(given: str | tuple[str, ...] | None, default: str) -> str:
    """The npz array named by `given` (the first of a tuple: the first input's), else `default`."""
    return given if isinstance(given, str) else given[0] if given else default


def _npz_extent(p: Npz, dims) -> Extent:
    import zipfile

    if not Path(p.path).is_file():
        raise _missing(p.path, "npz file")
    try:
        with zipfile.ZipFile(p.path) as z:
            info = z.getinfo(array_name(p.x, "x") + ".npy")
            with z.open(info) as f:
                header = _npy_header(f, f"{p.path}:{array_name(p.x, 'x')}")
                _fits(header[0], header[1], info.file_size - f.tell(), p.path, f"array {info.filename[:-4]!r}")
    except (zipfile.BadZipFile, OSError):
        raise NncError(f"{p.path}: cannot read as .npz (not a numpy file)") from None
    except KeyError:
        raise NncError(f"{p.path}: no array named {array_name(p.x, 'x')!r}") from None
    why = None if info.compress_type == zipfile.ZIP_STORED else \
        "it is compressed (np.savez_compressed), which cannot be memory-mapped: save it with np.savez or as .npy files"
    return _array_extent(*header, dims, p.path, why)


def _folder_extent(p: ImageFolder, dims) -> Extent:
    listing = list_images(p)
    n = len(listing.files)
    given = f", {' and '.join(k for k in listing.parts if k != 'train')} folders" if listing.parts else ""
    return Extent(n, _decoded(n, dims), f"{n:,} images in {len(listing.classes)} class folders{given}")


def _fixed(n: int, what: str = "examples"):
    return lambda p, dims: Extent(n, _decoded(n, dims), f"{n:,} {what}", "it is read whole")


def _synthetic(p: Synthetic, inp: Shape, outputs) -> Arrays:
    """Random inputs of the model's input (normal values, or token ids below the vocabulary) and
    random labels."""
    import numpy as np

    rng = np.random.default_rng(p.seed)
    classes = p.classes or outputs
    x = (rng.integers(0, inp.vocab, (p.n, *inp.dims), dtype=np.int64) if inp.kind == "tokens"
         else rng.standard_normal((p.n, *inp.dims), dtype=np.float32))
    return Arrays(x, rng.integers(0, classes, p.n, dtype=np.int64), [str(i) for i in range(classes)])


SHAPE_CLASSES = ["background", "rectangle", "disk", "triangle", "ring"]


def _shapes(p: Shapes, inp, outputs) -> Arrays:
    """Images of a few shapes (rectangles, disks, triangles, rings: as many kinds as the model
    has classes, less the background) on a noisy background, with a label for every pixel: a
    segmentation task made on the spot. Each shape has its own random brightness, so a pixel's
    value alone does not say its class: the model must look at the shape around it."""
    import numpy as np

    dims = inp.dims
    if len(dims) != 3:
        raise NncError("the shapes source makes images: declare `input image(C, H, W)`")
    c, h, w = dims
    kinds = min(outputs, len(SHAPE_CLASSES)) - 1
    if kinds < 1:
        raise NncError(f"the shapes source needs 2 to {len(SHAPE_CLASSES)} classes (background and shapes), "
                       f"the model has {outputs}")
    rng = np.random.default_rng(p.seed)
    yy, xx = np.mgrid[0:h, 0:w]
    x = rng.normal(0, p.noise, (p.n, c, h, w)).astype(np.float32)
    y = np.zeros((p.n, h, w), np.int64)
    for i in range(p.n):
        for _ in range(rng.integers(1, 4)):
            k = int(rng.integers(1, kinds + 1))
            r = rng.uniform(0.15, 0.3) * min(h, w)
            cy, cx = rng.uniform(r, h - r), rng.uniform(r, w - r)
            dy, dx = (yy - cy) / r, (xx - cx) / r
            mask = {1: (abs(dy) <= 0.8) & (abs(dx) <= 0.8), 2: dy ** 2 + dx ** 2 <= 1,
                    3: (dy <= 0.8) & (abs(dx) <= (dy + 1) / 1.8), 4: (dy ** 2 + dx ** 2 <= 1) & (dy ** 2 + dx ** 2 >= 0.3)}[k]
            x[i][:, mask] += rng.uniform(0.5, 1.5)
            y[i][mask] = k
    return Arrays(x, y, SHAPE_CLASSES[:kinds + 1])


def _memory(p: NoParams, inp, outputs) -> Arrays:
    raise NncError("this spec's data is handed over in memory by the Python API (nnc.train(spec, data=(x, y))), "
                   "so there is nothing here to read it from; write a data source in the spec's data section "
                   "(npz, csv, imagefolder, ...) to use it from the command line")


def _torchvision(name: str):
    def load(p: TorchvisionSet, inp, outputs) -> Arrays:
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
              example=(1, 8, 8), classes=10, extent=_fixed(1797)),
    SourceDef("npz", Npz, _npz, "arrays x and y from an .npz file", paths=("path",), extent=_npz_extent,
              streams=True),
    SourceDef("npy", Npy, _npy, "x and y from two .npy files", paths=("x", "y"), extent=_npy_extent,
              streams=True),
    SourceDef("csv", Csv, _csv, "a table of numbers with one label column", paths=("path",)),
    SourceDef("imagefolder", ImageFolder, _imagefolder, "a folder of class folders of images (Pillow), resized to the input",
              255.0, ("path", "train", "val", "test"), extent=_folder_extent, streams=True),
    SourceDef("synthetic", Synthetic, _synthetic, "random normal inputs and random labels of the spec's shapes",
              extent=lambda p, dims: Extent(p.n, _decoded(p.n, dims), f"{p.n:,} generated examples",
                                            "it is generated in memory")),
    SourceDef("shapes", Shapes, _shapes, "images of rectangles, disks, triangles and rings with a class label per pixel "
              "(segmentation), made on the spot",
              extent=lambda p, dims: Extent(p.n, _decoded(p.n, dims), f"{p.n:,} generated images",
                                            "it is generated in memory")),
    SourceDef("memory", NoParams, _memory, "arrays handed over by the Python API: nnc.train(spec, data=(x, y))"),
    SourceDef("cifar10", TorchvisionSet, _torchvision("cifar10"), "CIFAR-10 from a local root (torchvision)",
              255.0, ("root",), example=(3, 32, 32), classes=10, extent=_fixed(60000, "images")),
    SourceDef("mnist", TorchvisionSet, _torchvision("mnist"), "MNIST from a local root (torchvision)",
              255.0, ("root",), example=(1, 28, 28), classes=10, extent=_fixed(70000, "images")),
    SourceDef("fashion_mnist", TorchvisionSet, _torchvision("fashion_mnist"), "Fashion-MNIST from a local root (torchvision)",
              255.0, ("root",), example=(1, 28, 28), classes=10, extent=_fixed(70000, "images")),
))
