"""`nnc export --quantize int8` and `nnc bench`, through the real CLI on models trained here:
the int8 file is checked with onnxruntime directly (accuracy, interface, quantized ops), against
`nnc eval` for the fp32 side, and run by `nnc infer`."""

import json
import re

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import ROOT, run_nnc
from export_cases import nnc_main

from nnc.compiler.checks import check
from nnc.runtime import checkpoint
from nnc.runtime.data import load_splits

REPORT = re.compile(r"test accuracy ([\d.]+)% \(fp32\) -> ([\d.]+)% \(int8\)")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """digits_cnn (1 epoch) and digits_mlp (2 epochs) checkpoints, their fp32 exports, and the test split."""
    d = tmp_path_factory.mktemp("quantize")
    out = {}
    for spec, epochs in (("digits_cnn", 1), ("digits_mlp", 2)):
        r = nnc_main("train", ROOT / "specs" / f"{spec}.nnspec", "--epochs", epochs, "--out", d / spec, "--device",
                    "cpu", "-q", "--plots", "off")
        assert r.returncode == 0, r.stderr
        ckpt = d / spec / "best.safetensors"
        r = nnc_main("export", ckpt, "-o", d / f"{spec}.onnx")
        assert r.returncode == 0, r.stderr
        out[spec] = (ckpt, d / f"{spec}.onnx")
    tests = {k: load_splits(check(checkpoint.load(ck).spec())).test for k, (ck, _) in out.items()}
    return d, out, tests


def accuracy(path, test) -> float:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return float((sess.run(None, {"input": test.x})[0].argmax(1) == test.y).mean())


def ops(path) -> set[str]:
    return {n.op_type for n in onnx.load(str(path)).graph.node}


@pytest.mark.parametrize("spec, method", [("digits_cnn", "static"), ("digits_mlp", "dynamic")])
def test_int8_export_reports_what_onnxruntime_measures(trained, spec, method):
    d, models, tests = trained
    ckpt, fp32, test = *models[spec], tests[spec]
    int8 = d / f"{spec}.int8.onnx"
    r = nnc_main("export", ckpt, "-o", int8, "--quantize", "int8", "--max-drop", "inf")
    assert r.returncode == 0, r.stderr
    assert f"int8 ({method}:" in r.stdout
    said_fp32, said_int8 = (float(v) / 100 for v in REPORT.search(r.stdout).groups())
    assert said_fp32 == pytest.approx(accuracy(fp32, test), abs=5e-5)  # printed to 0.01%
    assert said_int8 == pytest.approx(accuracy(int8, test), abs=5e-5)
    assert abs(said_fp32 - said_int8) < 0.03  # calibrated sensibly: not a broken quantization
    q, f = onnx.load(str(int8)), onnx.load(str(fp32))
    meta = {p.key: p.value for p in q.metadata_props}
    assert meta.pop("quantization") == f"int8 {method}"
    assert meta == {p.key: p.value for p in f.metadata_props}  # class names, layout, preprocessing: as fp32
    assert [i.name for i in q.graph.input] == ["input"] and [o.name for o in q.graph.output] == ["scores"]
    if method == "static":  # QDQ around int8 convolutions, weights per output channel
        assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops(int8)
        inits = {t.name: t for t in q.graph.initializer}
        assert any(t.data_type == onnx.TensorProto.INT8 and len(t.dims) == 4 for t in inits.values())
        scales = [n.input[1] for n in q.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits
                  and len(inits[n.input[0]].dims) == 4]
        assert scales and all(len(inits[s].dims) == 1 and inits[s].dims[0] == 32 for s in scales)
    else:  # the dense layers' Gemm became int8 MatMuls
        assert "Gemm" not in ops(int8) and {"DynamicQuantizeLinear", "MatMulInteger"} <= ops(int8)
    assert int8.stat().st_size < fp32.stat().st_size / 2.5


def test_fp32_side_agrees_with_nnc_eval(trained):
    d, models, _ = trained
    ckpt, _ = models["digits_cnn"]
    r = nnc_main("export", ckpt, "-o", d / "again.onnx", "--quantize", "int8", "--max-drop", "inf")
    assert r.returncode == 0, r.stderr
    ev = nnc_main("eval", ckpt, "--json", "--device", "cpu")
    assert ev.returncode == 0, ev.stderr
    assert float(REPORT.search(r.stdout).group(1)) / 100 == pytest.approx(json.loads(ev.stdout)["accuracy"], abs=5e-5)


def test_a_drop_past_the_limit_refuses_and_writes_nothing(trained):
    d, models, _ = trained
    out = d / "refused.onnx"
    out.write_bytes(b"left alone")
    # a limit of -101 points demands a gain no accuracy can give: refused whatever the int8 model scores
    r = nnc_main("export", models["digits_mlp"][0], "-o", out, "--quantize", "int8", "--max-drop", "-101")
    assert r.returncode == 1
    assert "more than --max-drop -101; nothing was written" in r.stderr and "Traceback" not in r.stderr
    assert out.read_bytes() == b"left alone"
    r = nnc_main("export", models["digits_mlp"][0], "-o", d / "never.onnx", "--quantize", "int8")  # default: 1 point
    assert r.returncode in (0, 1) and ("limit 1)" in r.stdout or "more than --max-drop 1;" in r.stderr)


@pytest.mark.parametrize("args", [("--max-drop", "2"), ("--quantize", "int8", "--max-drop", "nan"),
                                  ("--quantize", "int4")])
def test_quantize_misuse_is_exit_2(trained, args):
    d, models, _ = trained
    r = nnc_main("export", models["digits_mlp"][0], "-o", d / "misuse.onnx", *args)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert not (d / "misuse.onnx").exists()


def test_infer_runs_the_int8_model(trained):
    d, models, tests = trained
    test = tests["digits_cnn"]
    int8 = d / "infer.int8.onnx"
    assert nnc_main("export", models["digits_cnn"][0], "-o", int8, "--quantize", "int8", "--max-drop", "inf").returncode == 0
    np.save(d / "test_x.npy", test.x)
    preds = {}
    for name, path in (("int8", int8), ("fp32", models["digits_cnn"][1])):
        r = nnc_main("infer", path, d / "test_x.npy", "--json")
        assert r.returncode == 0, r.stderr
        preds[name] = np.array([p["class"] for p in json.loads(r.stdout)["predictions"]])
    assert len(preds["int8"]) == len(test.y)
    assert (preds["int8"] == preds["fp32"]).mean() > 0.95
    assert float((preds["int8"] == test.y).mean()) == pytest.approx(accuracy(int8, test), abs=1e-9)


def test_bench_times_every_engine_at_both_batches(trained):
    d, models, _ = trained
    ckpt, fp32 = models["digits_cnn"]
    int8 = d / "bench.int8.onnx"
    assert nnc_main("export", ckpt, "-o", int8, "--quantize", "int8", "--max-drop", "inf").returncode == 0
    r = nnc_main("bench", ckpt, "--int8", int8, "--batch", 8, "--threads", 1, "--seconds", "0.05", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    rows = {(row["engine"], row["batch"]): row for row in out["rows"]}
    assert set(rows) == {(e, b) for e in ("ort fp32", "torch eager", "ort int8") for b in (1, 8)}
    for row in rows.values():
        assert 0 < row["p50_ms"] <= row["p90_ms"] <= row["p99_ms"] and row["calls"] >= 10
        assert row["per_second"] > 0
    assert out["threads"] == {"onnxruntime": 1, "pytorch": 1}
    r = run_nnc("bench", fp32, "--batch", 4, "--seconds", "0.05")  # an .onnx: onnxruntime only, a table
    assert r.returncode == 0, r.stderr
    assert "ort fp32" in r.stdout and "torch eager" not in r.stdout and "p99" in r.stdout
    assert re.search(r"ort fp32\s+4\s+\d+", r.stdout)
    r = nnc_main("bench", d / "missing.onnx")
    assert r.returncode == 1 and "no such ONNX file" in r.stderr


def test_python_api_quantizes_and_refuses(trained, tmp_path):
    import nnc
    from nnc.diagnostics import NncError

    d, models, tests = trained
    out = nnc.export(models["digits_mlp"][0], tmp_path / "api8.onnx", quantize="int8", max_drop=float("inf"))
    assert "MatMulInteger" in ops(out) and accuracy(out, tests["digits_mlp"]) > 0.5
    with pytest.raises(NncError, match="nothing was written"):
        nnc.export(models["digits_mlp"][0], tmp_path / "no.onnx", quantize="int8", max_drop=-101)
    assert not (tmp_path / "no.onnx").exists()


def test_bare_spec_with_preprocessing_is_refused(tmp_path):
    r = nnc_main("export", ROOT / "specs" / "digits_mlp.nnspec", "-o", tmp_path / "m.onnx", "--quantize", "int8")
    assert r.returncode == 1 and "preprocess mean_image normalize" in r.stderr and "checkpoint" in r.stderr
    assert not (tmp_path / "m.onnx").exists()
