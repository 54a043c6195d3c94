"""`nnc ensemble` and `train ema`: an ensemble of three digits models (one spec, three train
seeds) scores at least their mean single score, its ONNX export matches PyTorch's averaged
probabilities and carries metadata, members split differently (another data seed) are refused,
and an EMA checkpoint holds exactly the hand-computed average."""

import hashlib
import json

import numpy as np
import pytest
import torch
from conftest import SPECS, run_nnc

from nnc.cli import main as nnc_main
from nnc.compiler.checks import check
from nnc.compiler.load import load_text
from nnc.runtime import artifacts, checkpoint, preprocess
from nnc.runtime.data import load_splits
from nnc.runtime.train import train

MLP = (SPECS / "digits_mlp.nnspec").read_text()
# the textbook ensemble: the same spec and data line (so the same split, fixed by `data seed`),
# three train seeds (initialization and shuffling). 2 epochs each keeps them far from
# converged, where ensembling helps most.
VARIANTS = [("train.seed=0",), ("train.seed=1",), ("train.seed=2",)]


def _train(out, *overrides):
    graph = check(load_text(MLP, "digits_mlp.nnspec", ("train.epochs=2", "train.monitor_every=0", *overrides)))
    return train(graph, out, device="cpu", quiet=True, callbacks=[])


@pytest.fixture(scope="module")
def members(tmp_path_factory):
    root = tmp_path_factory.mktemp("members")
    runs = [(_train(root / f"m{i}", *v), root / f"m{i}" / "best.safetensors") for i, v in enumerate(VARIANTS)]
    return [(final["test_accuracy"], path) for final, path in runs]


def _by_hand(paths):
    """Each member's softmax on the raw test split, its preprocessing applied: (x, y, [probs])."""
    test = load_splits(artifacts.load(str(paths[0])).graph).test
    x = test.x.astype(np.float32)
    probs = []
    for p in paths:
        art = artifacts.load(str(p))
        with torch.no_grad():
            probs.append(torch.softmax(art.model()(torch.from_numpy(preprocess.apply(art.stats, x))), 1).numpy())
    return x, test.y, probs


def test_ensemble_beats_the_mean_member_and_its_onnx_matches_torch(members, tmp_path):
    import onnxruntime as ort

    paths = [p for _, p in members]
    onnx_path = tmp_path / "ens.onnx"
    r = run_nnc("ensemble", *paths, "-o", onnx_path, "--json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["split"] == "test" and len(res["members"]) == 3

    # the members' scores are those train reported on the same test split
    x, y, probs = _by_hand(paths)
    assert res["n"] == len(y) == 359  # 20% of 1797
    singles = [acc for acc, _ in members]
    assert [m["accuracy"] for m in res["members"]] == pytest.approx(singles, abs=1e-6)
    assert res["mean_accuracy"] == pytest.approx(np.mean(singles))
    assert len({float(p[0, 0]) for p in probs}) == 3  # three different models

    # the ensemble is the argmax of the averaged probabilities, and it scores at least the mean
    avg = np.mean(probs, 0)
    assert res["accuracy"] == pytest.approx(float((avg.argmax(1) == y).mean()), abs=1e-6)
    assert res["accuracy"] >= res["mean_accuracy"], res
    assert res["loss"] == pytest.approx(float(-np.log(avg[np.arange(len(y)), y]).mean()), rel=1e-4)

    # one ONNX graph: raw inputs in, the averaged probabilities out, as PyTorch computes them
    assert res["onnx"]["path"] == str(onnx_path) and res["onnx"]["max_abs_diff"] <= 1e-4
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (inp,) = sess.get_inputs()
    got = sess.run(None, {inp.name: x})[0]
    assert got.shape == (len(y), 10)
    np.testing.assert_allclose(got, avg, atol=1e-5)
    np.testing.assert_allclose(got.sum(1), 1, atol=1e-5)
    assert float((got.argmax(1) == y).mean()) == pytest.approx(res["accuracy"], abs=1e-6)

    # metadata like a single model's export, with each member's spec hash
    import onnx

    from nnc import __version__

    meta = {p.key: p.value for p in onnx.load(str(onnx_path)).metadata_props}
    texts = [artifacts.load(str(p)).checkpoint.spec_text for p in paths]
    hashes = [hashlib.sha256(t.encode()).hexdigest() for t in texts]
    assert meta["nnc_version"] == __version__ and meta["input_layout"] == "vector(64)"
    assert json.loads(meta["members_spec_sha256"]) == hashes
    members_meta = json.loads(meta["members"])
    assert [m["spec_name"] for m in members_meta] == ["DigitsMLP"] * 3
    assert [f"train.seed={i}" in m["overrides"] for i, m in enumerate(members_meta)] == [True] * 3
    assert json.loads(meta["classes"]) == artifacts.load(str(paths[0])).classes
    assert meta["output"] == "probabilities" and meta["preprocessing"] == "each member's, inside the graph"
    assert meta["data_source"] == "digits" and "pixel_max" not in meta  # vector inputs: no image files to scale


def test_ensemble_refuses_members_split_differently(tmp_path, capsys):
    # another data seed is another split: members would be tested on each other's training
    # data. (Two 1-epoch runs of its own: the `members` fixture would be trained again in
    # whichever xdist worker runs this test.)
    for name, seed in (("a", "data.seed=0"), ("b", "data.seed=1")):
        _train(tmp_path / name, seed, "train.epochs=1")
    a, b = (str(tmp_path / n / "best.safetensors") for n in "ab")
    assert nnc_main(["ensemble", a, b]) == 1
    err = capsys.readouterr().err
    assert "data seed (it fixes the split): 1 vs 0" in err and "Traceback" not in err, err
    assert nnc_main(["ensemble", a]) == 1
    assert "at least two checkpoints" in capsys.readouterr().err
    # the same member twice would count double, silently
    assert nnc_main(["ensemble", a, str(tmp_path / "a" / ".." / "a" / "best.safetensors"), b]) == 1
    assert f"is listed twice ({a})" in capsys.readouterr().err


def test_image_ensemble_records_the_pixel_scale_and_refuses_bad_outputs(tmp_path, capsys):
    """An ensemble of conv nets keeps the members' pixel scale (digits: 0..16), so `nnc infer`
    reads image files as a single model's export does; -o naming a folder, or a path under a
    file, stops before any work and leaves nothing behind."""
    import onnx

    cnn = (SPECS / "digits_cnn.nnspec").read_text()
    for seed in (0, 1):
        graph = check(load_text(cnn, "digits_cnn.nnspec", ("train.epochs=1", "train.monitor_every=0", f"train.seed={seed}")))
        train(graph, tmp_path / f"c{seed}", device="cpu", quiet=True, callbacks=[])
    paths = [str(tmp_path / f"c{seed}" / "best.safetensors") for seed in (0, 1)]
    assert nnc_main(["ensemble", *paths, "-o", str(tmp_path / "e.onnx")]) == 0
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "e.onnx")).metadata_props}
    assert meta["pixel_max"] == "16" and meta["data_source"] == "digits" and meta["input_layout"] == "image(1, 8, 8)"
    capsys.readouterr()

    (tmp_path / "folder").mkdir()
    (tmp_path / "afile").write_text("")
    for out, says in ((tmp_path / "folder", "is a folder; give a file name"), (tmp_path / "afile" / "x.onnx", "is a file, not a folder")):
        assert nnc_main(["ensemble", *paths, "-o", str(out)]) == 1
        err = capsys.readouterr().err
        assert says in err and "Traceback" not in err, err
    assert not list(tmp_path.glob(".*tmp")) and not list((tmp_path / "folder").iterdir())


class Record:
    """Records the raw parameters at the start and after every step (monitor_every=1)."""

    def __init__(self):
        self.steps = []

    def start(self, run):
        self.steps.append({k: v.detach().clone() for k, v in run.model.named_parameters()})

    def before_step(self, run):
        pass

    def after_step(self, run):
        self.steps.append({k: v.detach().clone() for k, v in run.model.named_parameters()})

    def epoch_end(self, run, record):
        return None

    def end(self, run):
        pass


# Both checkpoints hold the average as the model's weights (the `last` one also keeps the raw
# weights under state/raw/ for --resume; tests/test_train.py resumes an ema run).
def test_ema_checkpoint_holds_the_hand_computed_average(tmp_path):
    # 1258 training examples in batches of 640: two steps, decay 0.9 so that the average
    # visibly lags the raw weights
    graph = check(load_text(MLP, "digits_mlp.nnspec", ("train.epochs=1", "train.batch=640", "train.ema=0.9",
                                                       "train.monitor_every=1")))
    rec = Record()
    final = train(graph, tmp_path / "run", device="cpu", quiet=True, callbacks=[rec])
    assert len(rec.steps) == 3  # p0, p1, p2
    ema = dict(rec.steps[0])
    for p in rec.steps[1:]:
        ema = {k: e + 0.1 * (p[k] - e) for k, e in ema.items()}

    for kind in ("best", "last"):
        ck = checkpoint.load(tmp_path / "run" / f"{kind}.safetensors")
        assert "train.ema=0.9" in ck.overrides and ck.spec().train.ema == 0.9
        for k, e in ema.items():
            torch.testing.assert_close(ck.model[k], e, atol=1e-6, rtol=1e-5)
        # ... which are not the raw weights the optimizer reached
        assert any(not torch.allclose(ck.model[k], rec.steps[-1][k], atol=1e-4) for k in ema)

    # eval of the EMA checkpoint is the test accuracy train reported (of the EMA weights)
    r = run_nnc("eval", tmp_path / "run" / "best.safetensors", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["accuracy"] == pytest.approx(final["test_accuracy"])
