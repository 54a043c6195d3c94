"""The spec library travels with the package: `nnc specs` lists it, `nnc new` copies from it, a
library name stands for its spec where no such file exists (and the output says so), and the
wheel `pip install .` installs holds it."""

import json
import subprocess
import sys
import zipfile

from conftest import ROOT, SPECS, run_nnc

NAMES = sorted(p.stem for p in SPECS.glob("*.nnspec"))


def test_nnc_specs_lists_the_library():
    r = run_nnc("specs", "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert [row["name"] for row in rows] == NAMES
    by = {row["name"]: row for row in rows}
    assert by["alexnet"]["params"] == 62_378_344 and by["vgg16"]["params"] == 138_357_544
    assert by["digits_cnn"]["description"] == "A small ConvNet for scikit-learn's 8x8 digits, read as 1x8x8 images"
    table = run_nnc("specs")
    assert table.returncode == 0 and "62,378,344" in table.stdout and "resnet18" in table.stdout


def test_a_library_name_where_no_such_file_exists(tmp_path):
    r = run_nnc("check", "alexnet", cwd=tmp_path)
    assert r.returncode == 0 and "AlexNet: 62,378,344 parameters" in r.stdout
    assert "no file alexnet here: reading the library's alexnet" in r.stderr
    (tmp_path / "alexnet.nnspec").write_text("model M {\n    input vector(4)\n    dense 2\n}\n")
    r = run_nnc("check", "alexnet.nnspec", cwd=tmp_path)  # a file of that name is read, and nothing said
    assert r.returncode == 0 and "M: 10 parameters" in r.stdout and "library" not in r.stderr
    r = run_nnc("check", "alexnt", cwd=tmp_path)
    assert r.returncode == 1 and "alexnt: no such file" in r.stderr and "the spec library has alexnet" in r.stderr
    r = run_nnc("compile", "lenet5", "-o", "lenet5.py", cwd=tmp_path)  # through the artifact loader
    assert r.returncode == 0, r.stderr
    assert "class LeNet5" in (tmp_path / "lenet5.py").read_text()


def test_nnc_new(tmp_path):
    r = run_nnc("new", "mynet", "--from", "alexnet", cwd=tmp_path)
    assert r.returncode == 0 and "wrote mynet.nnspec" in r.stderr
    assert (tmp_path / "mynet.nnspec").read_text() == (SPECS / "alexnet.nnspec").read_text()
    r = run_nnc("new", "mynet", "--from", "vgg16", cwd=tmp_path)
    assert r.returncode == 2 and "exists already" in r.stderr
    r = run_nnc("new", "other.nnspec", "--from", "nope", cwd=tmp_path)
    assert r.returncode == 2 and "no library spec of that name" in r.stderr
    r = run_nnc("new", "plain", cwd=tmp_path)  # the default: a small spec that trains in seconds
    assert r.returncode == 0 and (tmp_path / "plain.nnspec").read_text() == (SPECS / "digits_mlp.nnspec").read_text()
    assert run_nnc("check", "plain.nnspec", cwd=tmp_path).returncode == 0


def test_the_wheel_holds_the_library(tmp_path):
    """What `pip install .` installs (pyproject maps specs/ to the package nnc.specs)."""
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                        str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    (wheel,) = tmp_path.glob("nnc-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert sorted(n.split("/")[-1][: -len(".nnspec")] for n in names if n.startswith("nnc/specs/")
                  and n.endswith(".nnspec")) == NAMES
    assert "nnc/specs/__init__.py" in names
