"""What a checkpoint or an ONNX file from someone else can make nnc do: read files its stored spec
names (only where the user names them too), print escape sequences (never), pass off flipped
bits as weights (never)."""

import json

import numpy as np
import pytest
from export_cases import nnc_main

from nnc.compiler.checks import check
from nnc.compiler.load import load_text
from nnc.compiler.torch_module import build_model
from nnc.runtime import checkpoint

TINY = "model M {{\n    input vector(2)\n    dense 2\n}}\ndata {data}, val 0.2, test 0.2\ntrain batch 8, epochs 1\n"


def save_checkpoint(path, text, spec_name, classes=None):
    graph = check(load_text(text, spec_name))
    checkpoint.save(path, checkpoint.Checkpoint(text, spec_name, build_model(graph).state_dict(), classes=classes))
    return path


@pytest.fixture
def secret(tmp_path):
    path = tmp_path / "secret.csv"
    path.write_text("s3cret,label\n" + "".join(f"{i},{i % 2}\n" for i in range(20)))
    return path


@pytest.mark.parametrize("how", ["absolute", "dotdot"])
def test_a_checkpoint_does_not_read_files_the_user_did_not_name(tmp_path, secret, how):
    """A crafted checkpoint whose spec names a file elsewhere (absolute, or ../ from a spec file
    that is not here): eval, ensemble and resume refuse before opening it; --allow-read names it."""
    (tmp_path / "proj").mkdir()
    data = f'csv("{secret}")' if how == "absolute" else 'csv("../secret.csv")'
    ck = save_checkpoint(tmp_path / "proj" / "best.safetensors", TINY.format(data=data).replace("vector(2)", "vector(1)"),
                         str(tmp_path / "proj" / "gone.nnspec"))
    r = nnc_main("eval", ck)
    assert r.returncode == 1 and "s3cret" not in r.stdout + r.stderr
    assert f"its spec reads data csv path {secret}" in r.stderr.replace(str(tmp_path / "proj" / ".."), str(tmp_path))
    assert "nnc reads a file a checkpoint names only when you name it too" in r.stderr
    assert "gone.nnspec is not on this machine" in r.stderr and "--allow-read" in r.stderr
    ck.with_name("other.safetensors").write_bytes(ck.read_bytes())
    r = nnc_main("ensemble", ck, ck.with_name("other.safetensors"))
    assert r.returncode == 1 and "only when you name it too" in r.stderr and "s3cret" not in r.stdout + r.stderr
    run = tmp_path / "run"
    run.mkdir()
    (run / "last.safetensors").write_bytes(ck.read_bytes())
    r = nnc_main("train", "--resume", run)
    assert r.returncode == 1 and "only when you name it too" in r.stderr
    r = nnc_main("eval", ck, "--allow-read", secret, "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["n"] == 4, r.stderr


def test_a_checkpoints_own_spec_file_names_its_data(tmp_path):
    """The everyday case needs no flag: the recorded spec file, unchanged, names the data. Edited
    since, it no longer vouches for the checkpoint's paths."""
    proj = tmp_path / "proj"
    proj.mkdir()
    rng = np.random.default_rng(0)
    np.savez(proj / "d.npz", x=rng.standard_normal((20, 2)).astype(np.float32), y=np.arange(20) % 2)
    spec = proj / "s.nnspec"
    spec.write_text(TINY.format(data='npz("d.npz")'))
    ck = save_checkpoint(tmp_path / "best.safetensors", spec.read_text(), str(spec))
    assert nnc_main("eval", ck).returncode == 0
    spec.write_text(spec.read_text() + "# edited\n")
    r = nnc_main("eval", ck)
    assert r.returncode == 1 and f"its spec file {spec} holds another text now" in r.stderr
    assert nnc_main("eval", ck, "--allow-read", proj).returncode == 0


def test_flipped_bits_in_a_checkpoint_are_a_damaged_checkpoint(tmp_path):
    ck = save_checkpoint(tmp_path / "best.safetensors", TINY.format(data="synthetic(n=20)"), "s.nnspec")
    checkpoint.load(ck)
    data = bytearray(ck.read_bytes())
    start = 8 + int.from_bytes(data[:8], "little")
    data[start] ^= 0x01  # the lowest mantissa bit of the first weight: still a finite number
    ck.write_bytes(bytes(data))
    r = nnc_main("eval", ck)
    assert r.returncode == 1 and "damaged checkpoint: its weights do not match the checksum" in r.stderr


def test_class_names_from_files_never_reach_the_terminal_raw(tmp_path):
    """Escape sequences (and rich markup) in class names of a checkpoint or an ONNX model's
    metadata are printed inert by eval and infer."""
    classes = ["\x1b]0;pwned\x07a", "[red]b\x1b[2J"]
    ck = save_checkpoint(tmp_path / "best.safetensors", TINY.format(data="synthetic(n=20)"), "s.nnspec", classes)
    r = nnc_main("eval", ck)
    assert r.returncode == 0, r.stderr
    assert "\x1b" not in r.stdout and "\x07" not in r.stdout and "[red]b" in r.stdout
    r = nnc_main("export", ck, "-o", tmp_path / "m.onnx")
    assert r.returncode == 0, r.stderr
    np.save(tmp_path / "x.npy", np.zeros((1, 2), np.float32))
    r = nnc_main("infer", tmp_path / "m.onnx", tmp_path / "x.npy", "--top", "2")
    assert r.returncode == 0, r.stderr
    assert "\x1b" not in r.stdout and "\x07" not in r.stdout and "[red]b" in r.stdout
    r = nnc_main("infer", tmp_path / "m.onnx", tmp_path / "x.npy", "--json")
    assert json.loads(r.stdout)["predictions"][0]["top"][0]["label"] in classes  # JSON keeps them, escaped
