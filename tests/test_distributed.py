"""Training with several processes on the CPU (gloo, 2 processes), as torchrun starts them: the
ranks are processes of this machine given torchrun's environment (tests/dist_workers.py), or
the real `nnc train --nproc 2`. Each start has a timeout, so a rank left hanging in a collective
fails the test instead of blocking the suite."""

import json
import multiprocessing as mp
import socket
import sys
from pathlib import Path

import pytest
import torch
from conftest import run_nnc

from nnc.compiler.checks import check
from nnc.compiler.load import load_text
from nnc.runtime.train import train

HERE = Path(__file__).parent

SPEC = """
model M {{
    input vector(64)
    dense fc1 32
    relu
    dense fc2 10
}}
optimizer adam(lr=3e-3)
schedule cosine
regularize l2 1e-4
data digits, val 0.15, test 0.15, preprocess mean_image normalize
train batch {batch}, epochs {epochs}, monitor_every {every}{extra}
"""


def spec(epochs=3, every=0, extra="", batch=60):
    return SPEC.format(epochs=epochs, every=every, extra=extra, batch=batch)


def spawn(fn: str, out: Path, *args, size: int = 2, timeout: float = 120) -> list[int]:
    """Run dist_workers.<fn>(rank, out, *args) as `size` ranks; their exit codes (a hang fails)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sys.path.insert(0, str(HERE)) if str(HERE) not in sys.path else None
    import dist_workers

    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=dist_workers.entry, args=(fn, r, size, port, str(out), args)) for r in range(size)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout)
    hung = [r for r, p in enumerate(procs) if p.is_alive()]
    for p in procs:
        if p.is_alive():
            p.kill()
    assert not hung, f"ranks {hung} still running after {timeout} s: hanging in a collective?"
    return [p.exitcode for p in procs]


def one_process(text, out, **kw):
    return train(check(load_text(text, "m.nnspec")), out, device="cpu", quiet=True, callbacks=[], **kw)


def epochs_of(run: Path) -> list[dict]:
    return [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines() if '"train_loss"' in l]


def assert_same_run(a: dict, b: dict, run_a: Path, run_b: Path) -> None:
    assert a["test_loss"] == pytest.approx(b["test_loss"], rel=1e-5)
    assert a["test_accuracy"] == pytest.approx(b["test_accuracy"], abs=1e-9)
    assert a["best_epoch"] == b["best_epoch"] and a["epochs"] == b["epochs"]
    for x, y in zip(epochs_of(run_a), epochs_of(run_b), strict=True):
        for k in ("train_loss", "val_loss", "train_accuracy", "val_accuracy", "lr"):
            assert x[k] == pytest.approx(y[k], rel=1e-5, abs=1e-7), (x["epoch"], k)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A 1-process run of the spec, the reference for the 2-process ones."""
    out = tmp_path_factory.mktemp("one") / "run"
    return one_process(spec(), out), out


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """One start of two ranks for the cheaper checks: one step's gradients, then runs that stop:
    divergence (exit 3), early stopping, Ctrl-C on rank 1 only (130), too many unreadable images
    (exit 1), a streamed, augmented image folder, and a torch Dataset streamed (and a bad one)."""
    out = tmp_path_factory.mktemp("ranks")
    folder = _images(out / "imgs", bad=1)
    images = ('model F {\n input image(3, 8, 8)\n conv 4 kernel 3 pad 1\n relu\n dense 3\n}\n'
              f'optimizer adam(lr=3e-3)\ndata imagefolder("{folder}"), val 0.2, test 0.2, cache stream, workers 1, '
              'max_bad BAD, preprocess channel_mean normalize, augment random_resized_crop flip color_jitter\n'
              'train batch 16, epochs 2, monitor_every 1\n')
    cases = [("diverge", spec().replace("optimizer adam(lr=3e-3)", "optimizer sgd(lr=80)"), None, None),
             ("early", spec(epochs=30, extra=", early_stop(patience=1, min_delta=0.5)"), None, None),
             ("interrupt", spec(every=1), 1, ["SignalAt", 1]),
             ("stream", images.replace("BAD", "0.1"), None, None),
             ("broken", images.replace("BAD", "0"), None, None),
             ("dataset", spec(), None, None),
             ("dataset_bad", spec(), None, None)]
    assert spawn("scenarios", out, spec(batch=64), 5, cases, timeout=300) == [0, 0]
    results = [json.loads((out / f"results{r}.json").read_text()) for r in (0, 1)]
    return out, results, images


def test_two_ranks_compute_the_gradient_of_the_global_batch(two_ranks, tmp_path):
    """One step: each rank's gradient (after DDP's all-reduce) is the single process's gradient of
    the same global batch, though each saw half of it; after more steps both ranks hold the same
    parameters as each other and as the single process."""
    out = two_ranks[0]
    import dist_workers
    from nnc.runtime import distributed
    from nnc.runtime.train import batches, prepare, step

    s, _ = prepare(dist_workers._graph(spec(batch=64)), tmp_path / "one", torch.device("cpu"), distributed.World(), None)
    it = batches(s, 0)
    for i in range(5):
        xb, yb, n = next(it)
        assert len(yb) == 64  # the global batch, on one process
        step(s, xb, yb, n, False, (), None)
        if i == 0:
            grads = {k: p.grad.clone() for k, p in s.model.named_parameters()}
    for rank in (0, 1):
        got = torch.load(out / f"grads{rank}.pt")
        for k, g in grads.items():
            torch.testing.assert_close(got[k], g, rtol=1e-5, atol=1e-7)
    p0, p1 = torch.load(out / "params0.pt"), torch.load(out / "params1.pt")
    for k, p in s.model.named_parameters():
        assert torch.equal(p0[k], p1[k]), k
        torch.testing.assert_close(p0[k], p.detach(), rtol=1e-4, atol=1e-6)


def test_stops_reach_every_rank(two_ranks, tmp_path):
    """Divergence, early stopping, Ctrl-C on one rank and too many unreadable images end both
    ranks at the same point, none left waiting; streamed images with augmentation train as on one
    process (augmentation is drawn per example, not per process)."""
    out, (r0, r1), images = two_ranks
    assert r0["diverge"]["exit"] == r1["diverge"]["exit"] == 3
    assert r0["early"]["epochs"] == r1["early"]["epochs"] < 30
    assert r0["interrupt"]["exit"] == r1["interrupt"]["exit"] == 130
    assert not (out / "interrupt" / "metrics.jsonl").read_text().count('"epoch": 2,')
    assert r0["broken"]["exit"] == r1["broken"]["exit"] == 1
    assert "1 of 31 images could not be read" in r0["broken"]["message"]
    one = one_process(images.replace("BAD", "0.1"), tmp_path / "stream1")
    assert r0["stream"]["test_loss"] == pytest.approx(one["test_loss"], rel=1e-5)


def test_a_torch_dataset_is_sharded_over_two_ranks(two_ranks, reference):
    """The Python API's torch Dataset, streamed with each rank reading its share of each batch,
    trains as the same data in memory on one process; a bad item stops both ranks."""
    out, (r0, r1), _ = two_ranks
    final_1, run_1 = reference
    assert_same_run(r0["dataset"], final_1, out / "dataset", run_1)
    assert r0["dataset_bad"]["exit"] == r1["dataset_bad"]["exit"] == 1
    assert "item 1000 is a str, not an (x, y) pair" in r0["dataset_bad"]["message"] + r1["dataset_bad"]["message"]


def test_nproc_2_trains_like_one_process_and_rank_0_alone_writes(tmp_path, reference):
    """`nnc train --nproc 2` (torchrun): the same metrics as one process with the same global batch
    and seed, one run directory with one line per epoch and one TensorBoard file."""
    final_1, run_1 = reference
    (tmp_path / "m.nnspec").write_text(spec())
    r = run_nnc("train", "m.nnspec", "--nproc", "2", "--device", "cpu", "--plots", "wait", cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "2 processes (gloo), batch 60 = 2 x 30 per process" in r.stderr
    run_2 = tmp_path / "runs" / "m"
    final_2 = json.loads((run_2 / "metrics.jsonl").read_text().splitlines()[-1])["final"]
    assert_same_run(final_2, final_1, run_2, run_1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.nnspec", "runs"]
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["m"]
    assert sorted(p.name for p in run_2.iterdir()) == [".lock", "accuracy.png", "best.safetensors", "dashboard.png",
                                                      "last.safetensors", "loss.png", "metrics.jsonl", "spec.nnspec",
                                                      "tensorboard"]
    assert [r["epoch"] for r in epochs_of(run_2)] == [1, 2, 3]  # one writer
    assert len(list((run_2 / "tensorboard").iterdir())) == 1
    assert r.stdout.count("test loss") == 1 and r.stderr.count("epoch   1") == 1  # rank 0 speaks


def test_a_killed_two_process_run_resumes_with_two_or_one(tmp_path, reference):
    """Rank 0 dies in epoch 3 (the other rank's next collective fails: no hang); the run resumes
    from its epoch-2 checkpoint with 2 processes, or 1, and ends as the uninterrupted run did."""
    final_1, run_1 = reference
    text = spec(every=1)
    codes = spawn("killed", tmp_path, text, 2)
    assert codes[0] == 9 and codes[1] != 0
    from nnc.runtime import checkpoint

    assert checkpoint.load(tmp_path / "cut" / "last.safetensors").info["epoch"] == 2
    r = run_nnc("train", "--resume", tmp_path / "cut", "--out", tmp_path / "two", "--nproc", "2", "--json",
                "--device", "cpu", timeout=300)
    assert r.returncode == 0, r.stderr
    assert_same_run(json.loads(r.stdout.strip().splitlines()[-1]), final_1, tmp_path / "two", run_1)
    final = one_process(text, tmp_path / "one", resume=str(tmp_path / "cut"))
    assert_same_run(final, final_1, tmp_path / "one", run_1)


def _images(root: Path, bad: int = 0, n: int = 10) -> Path:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(3):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(n):
            Image.fromarray((rng.random((10, 12, 3)) * 90 + 50 * c).astype(np.uint8)).save(root / f"c{c}" / f"{i}.png")
    for i in range(bad):
        (root / "c0" / f"broken{i}.png").write_bytes(b"not a png")
    return root
