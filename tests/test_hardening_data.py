"""Hostile or broken data files, study databases and output folders: each a clear error naming
the file (exit 1), quickly, before anything is allocated for what a header claims."""

import io
import struct
import zipfile
import zlib

import numpy as np
import pytest
from export_cases import nnc_main

VECTOR = "model M {{\n    input vector(2)\n    dense 2\n}}\ndata {data}\ntrain epochs 1\n"
IMAGE = "model M {{\n    input image(1, 8, 8)\n    dense 2\n}}\ndata {data}\ntrain epochs 1\n"


def npy_bytes_claiming(shape) -> bytes:
    """An .npy header claiming `shape` of float32, followed by 256 bytes of data."""
    header = f"{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}"
    header += " " * (63 - (10 + len(header)) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + b"\0" * 256


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header says width x height (and holds no pixels)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IEND", b""))


def train_on(tmp_path, data, template=VECTOR):
    (tmp_path / "s.nnspec").write_text(template.format(data=data))
    return nnc_main("train", tmp_path / "s.nnspec", "--out", tmp_path / "run", "-q")


def test_a_header_claiming_a_huge_array_is_refused_before_numpy_allocates_it(tmp_path):
    big = npy_bytes_claiming((10 ** 12, 64))
    (tmp_path / "x.npy").write_bytes(big)
    np.save(tmp_path / "y.npy", np.arange(10) % 2)
    with zipfile.ZipFile(tmp_path / "d.npz", "w") as z:
        z.writestr("x.npy", big)
        buf = io.BytesIO()
        np.save(buf, np.arange(10) % 2)
        z.writestr("y.npy", buf.getvalue())
    want = "says shape (1000000000000, 64) of float32 (256,000,000,000,000 bytes), but the file holds 256 bytes"
    for data, path in (('npy(x="x.npy", y="y.npy")', "x.npy"), ('npz("d.npz")', "d.npz")):
        r = train_on(tmp_path, data)
        assert r.returncode == 1 and f"{path}: the header of" in r.stderr and want in r.stderr, r.stderr
        assert not (tmp_path / "run").exists()


def test_arrays_of_text_csv_fields_past_the_limit_and_image_bombs(tmp_path):
    np.savez(tmp_path / "t.npz", x=np.array([["a", "b"]] * 10), y=np.arange(10) % 2)
    r = train_on(tmp_path, 'npz("t.npz")')
    assert r.returncode == 1 and "t.npz: array 'x' holds text values, not numbers" in r.stderr
    (tmp_path / "long.csv").write_text("a,label\n" + "1" * 200_000 + ",1\n" + "2,0\n" * 10)
    r = train_on(tmp_path, 'csv("long.csv")')
    assert r.returncode == 1 and "long.csv: line 2: field larger than field limit (131072)" in r.stderr
    for c in "ab":
        (tmp_path / "imgs" / c).mkdir(parents=True)
    (tmp_path / "imgs" / "a" / "bomb.png").write_bytes(png_claiming(20000, 20000))
    from PIL import Image

    for i in range(3):
        Image.new("L", (8, 8), 40 * i).save(tmp_path / "imgs" / "b" / f"ok{i}.png")
    r = train_on(tmp_path, 'imagefolder("imgs")', IMAGE)  # skipped and counted: 1 of 4 is past max_bad
    assert r.returncode == 1 and "1 of 4 images could not be read" in r.stderr, r.stderr
    assert "bomb.png (too large an image to read (Image size (400000000 pixels)" in r.stderr


def test_infer_refuses_the_same_files(tmp_path):
    (tmp_path / "s.nnspec").write_text(IMAGE.format(data="synthetic(n=20)"))
    assert nnc_main("export", tmp_path / "s.nnspec", "-o", tmp_path / "m.onnx").returncode == 0
    (tmp_path / "big.npy").write_bytes(npy_bytes_claiming((10 ** 12, 1, 8, 8)))
    (tmp_path / "bomb.png").write_bytes(png_claiming(20000, 20000))
    np.save(tmp_path / "t.npy", np.array([["a"] * 64]))
    for name, message in (("big.npy", "the header of the array says shape (1000000000000, 1, 8, 8)"),
                          ("bomb.png", "too large an image to read"), ("t.npy", "holds text values, not numbers")):
        r = nnc_main("infer", tmp_path / "m.onnx", tmp_path / name)
        assert r.returncode == 1 and f"{name}: {message}" in r.stderr, r.stderr


@pytest.mark.parametrize("study", ["garbage", "folder"])
def test_a_study_db_that_is_no_study_is_a_clear_error(tmp_path, study):
    (tmp_path / "s.nnspec").write_text("model M {\n    input vector(64)\n    dense 10\n}\n"
                                       "optimizer adam(lr=loguniform(1e-3, 1e-2))\ntrain epochs 1\n")
    out = tmp_path / "S"
    out.mkdir()
    if study == "folder":
        (out / "study.db").mkdir()
    else:
        (out / "study.db").write_text("not sqlite\n")
    r = nnc_main("search", tmp_path / "s.nnspec", "--trials", "1", "--out", out)
    assert r.returncode == 1, r.stderr
    assert (f"{out / 'study.db'}: a folder, not a study database" if study == "folder"
            else f"{out / 'study.db'}: not a study database nnc search can open") in r.stderr


def test_an_out_folder_that_cannot_be_written(tmp_path):
    """/sys refuses new files (even to root): a clear error before any training."""
    (tmp_path / "s.nnspec").write_text(VECTOR.format(data="synthetic(n=20)"))
    ranged = VECTOR.format(data="synthetic(n=20)").replace("dense 2", "dense 2\n    dropout uniform(0.1, 0.5)")
    (tmp_path / "r.nnspec").write_text(ranged)
    for cmd in (("train", tmp_path / "s.nnspec"), ("search", tmp_path / "r.nnspec", "--trials", "1")):
        r = nnc_main(*cmd, "--out", "/sys")
        assert r.returncode == 1 and "cannot write in /sys" in r.stderr, r.stderr


def test_show_estimates_memory_per_example_and_in_total(tmp_path):
    """nnc show's numbers, against the sums written out: float32 weights; per example every layer's
    output and the input; training adds gradients, Adam's two moments, twice a batch's activations
    and the data set twice."""
    import json

    (tmp_path / "s.nnspec").write_text("model M {\n input vector(64)\n dense 32\n relu\n dense 10\n}\n"
                                       "optimizer adam\ndata digits, val 0.1, test 0.2\ntrain batch 16\n")
    r = nnc_main("show", tmp_path / "s.nnspec", "--json")
    memory = json.loads(r.stdout)["memory"]
    weights = (64 * 32 + 32 + 32 * 10 + 10) * 4
    per_example = (64 + 32 + 32 + 10) * 4
    data = 2 * 1797 * 64 * 4
    assert memory["weights"] == weights and memory["activations_per_example"] == per_example
    assert memory["training"] == weights + 3 * weights + 16 * 2 * per_example + data
    r = nnc_main("show", tmp_path / "s.nnspec")
    assert "memory (float32, estimated): weights 9.4 KiB, activations 552 B per example (1.1 KiB when training)" in r.stdout
    assert "training: about" in r.stdout and "the data set 898.5 KiB (1,797 examples, twice)" in r.stdout


# each far past any machine's memory (the issue's `conv 1000000` on 8x8 needs ~68 GiB: a big machine may hold it)
HUGE = {
    "dense": "input vector(64)\n dense 1000000000000\n dense 10\n}\ndata digits",
    "conv": "input image(1, 8, 8)\n conv 100000000 kernel 3 pad 1\n dense 10\n}\ndata digits",
    "examples": "input vector(64)\n dense 10\n}\ndata synthetic(n=1000000000000)",
    "input": "input image(3, 100000, 100000)\n dense 10\n}\ndata synthetic",
}


@pytest.mark.parametrize("case", sorted(HUGE))
def test_what_cannot_fit_is_refused_before_anything_is_allocated(tmp_path, case):
    import time

    (tmp_path / "s.nnspec").write_text("model M {\n " + HUGE[case] + "\n")
    r = nnc_main("check", tmp_path / "s.nnspec")
    assert r.returncode == 0 and "M needs about" in r.stderr and "more than this machine's memory" in r.stderr
    for cmd in (("train", tmp_path / "s.nnspec", "--out", tmp_path / "run"), ("doctor", tmp_path / "s.nnspec")):
        t0 = time.perf_counter()
        r = nnc_main(*cmd)
        assert r.returncode == 1 and "M needs about" in r.stderr and "nothing was allocated" in r.stderr, r.stderr
        assert time.perf_counter() - t0 < 10
    assert not (tmp_path / "run").exists()


def test_export_refuses_what_cannot_fit_or_exceeds_onnx(tmp_path):
    (tmp_path / "a.nnspec").write_text("model M {\n input image(1, 64, 64)\n conv 100000000 kernel 1\n global_avgpool\n}\n")
    r = nnc_main("export", tmp_path / "a.nnspec", "-o", tmp_path / "a.onnx")
    assert r.returncode == 1 and "M needs about" in r.stderr and "to export (weights" in r.stderr, r.stderr
    (tmp_path / "b.nnspec").write_text("model M {\n input vector(64)\n dense 10000000\n dense 10\n}\n")
    r = nnc_main("export", tmp_path / "b.nnspec", "-o", tmp_path / "b.onnx")
    assert r.returncode == 1 and "an ONNX file holds at most 2 GiB" in r.stderr
    assert not list(tmp_path.glob("*.onnx"))
