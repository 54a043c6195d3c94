"""`nnc bench`: the user's own model timed on this machine, so that a speed claim can be checked
rather than trusted. onnxruntime (and an int8 model beside it, when given) and, for a checkpoint
or spec, PyTorch eager on the same inputs, at batch 1 and a chosen batch.

The engines take turns in short blocks (run_bench) rather than one after the other, so that load
from other processes on a shared machine lands on all of them alike; each call's latency is kept
and the table shows its percentiles and the throughput its mean implies.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from nnc.diagnostics import NncError
from nnc.runtime import artifacts

WARMUP = 3  # calls per engine and batch before timing: first-call allocation, thread pool start-up
ROUNDS = 5  # blocks per engine and batch size, the engines' blocks alternating
PAUSE = 0.1  # seconds of quiet before each block (at most the block's length)


@dataclass
class Row:
    engine: str
    batch: int
    latencies: list[float] = field(default_factory=list)  # seconds per call

    def summary(self) -> dict:
        lat = np.asarray(self.latencies)
        p50, p90, p99 = (float(np.percentile(lat, q)) for q in (50, 90, 99))
        return {"engine": self.engine, "batch": self.batch, "calls": len(lat), "p50_ms": 1e3 * p50,
                "p90_ms": 1e3 * p90, "p99_ms": 1e3 * p99, "per_second": self.batch / float(lat.mean())}


@dataclass
class Engines:
    """name -> a function of the batch size that returns a zero-argument call running one batch."""
    make: dict[str, Callable[[int], Callable[[], object]]]
    threads: int | None


def ort_session(model, threads: int | None):
    """A CPU onnxruntime session of a path or serialized model; `threads` intra-op threads."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(model) if not isinstance(model, bytes) else model, opts,
                                    providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime's own (InvalidProtobuf, NoSuchFile, ...)
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise NncError(f"{model if not isinstance(model, bytes) else 'the exported model'}: not a loadable ONNX "
                       f"model ({first[:300]})") from None


def random_feed(sess, path: str, batch: int) -> dict[str, np.ndarray]:
    """Random inputs of the session's own shapes: token ids below the model's vocab (its metadata),
    floats otherwise (the graph preprocesses them; the values do not change the time)."""
    rng = np.random.default_rng(batch)
    vocab = sess.get_modelmeta().custom_metadata_map.get("vocab")
    feed = {}
    for inp in sess.get_inputs():
        dims = inp.shape[1:]
        if not all(isinstance(d, int) and d > 0 for d in dims):
            raise NncError(f"{path}: input {inp.name!r} has a size that is not fixed ({inp.shape}); nnc bench times "
                           "models whose inputs are fixed but for the batch")
        if "int64" in inp.type:
            feed[inp.name] = rng.integers(0, int(vocab) if vocab and vocab.isdigit() else 2, (batch, *dims))
        else:
            feed[inp.name] = rng.standard_normal((batch, *dims)).astype(np.float32)
    return feed


def onnx_engine(model, path: str, threads: int | None):
    sess = ort_session(model, threads)

    def make(batch: int):
        feed = random_feed(sess, path, batch)
        return lambda: sess.run(None, feed)

    return make


def eager_engine(art: artifacts.Artifact, threads: int | None):
    """The checkpoint's module with its preprocessing, as the exported graph computes it."""
    import torch

    from nnc.runtime import preprocess
    from nnc.runtime.export import random_inputs

    if threads:
        torch.set_num_threads(threads)
    model = art.model("cpu")
    stats = {k: torch.from_numpy(np.asarray(v, np.float32)) for k, v in art.stats.items()}

    def make(batch: int):
        x = random_inputs(art.graph, art.stats, batch)
        ts = [torch.from_numpy(a) for a in (x if isinstance(x, list) else [x])]

        def call():
            with torch.inference_mode():
                first = preprocess.apply(stats, ts[0]) if stats and ts[0].is_floating_point() else ts[0]
                return model(first, *ts[1:])

        return call

    return make


def engines(path: str, threads: int | None, int8: str | None, opset: int) -> Engines:
    """onnxruntime on an .onnx file; for a checkpoint or spec, its graph exported in memory (and
    verified) beside PyTorch eager. `int8`: another .onnx timed beside them (`nnc export --quantize`)."""
    from nnc.runtime.export import export_artifact

    if artifacts.kind_of(path) == artifacts.ONNX:
        if not Path(path).is_file():
            raise NncError(f"{path}: no such ONNX file")
        make = {"ort fp32": onnx_engine(path, path, threads)}
    else:
        art = artifacts.load(path)
        data = export_artifact(art, None, opset, False).model.SerializeToString()
        make = {"ort fp32": onnx_engine(data, path, threads), "torch eager": eager_engine(art, threads)}
    if int8:
        make["ort int8"] = onnx_engine(int8, int8, threads)
    return Engines(make, threads)


def run_bench(e: Engines, batches: tuple[int, ...], seconds: float, min_calls: int = 10) -> list[dict]:
    """Per batch size: ROUNDS blocks of each engine in turn, each block about seconds / ROUNDS long
    (at least min_calls / ROUNDS calls), after a pause: onnxruntime's idle threads spin for a while
    after a run, and OpenMP's after a parallel region, which slows whatever runs at once after them
    (bench/infer.py measured 1.3-2x on 2 cores)."""
    rows = []
    block, least = seconds / ROUNDS, -(-min_calls // ROUNDS)
    for batch in dict.fromkeys(batches):  # batch 1 once when --batch 1
        calls = {name: make(batch) for name, make in e.make.items()}
        timed = {name: Row(name, batch) for name in calls}
        for name, call in calls.items():
            for _ in range(WARMUP):
                call()
        for _ in range(ROUNDS):
            for name, call in calls.items():
                time.sleep(min(PAUSE, block))
                lat, end = timed[name].latencies, time.perf_counter() + block
                for n in itertools.count():
                    if n >= least and time.perf_counter() >= end:
                        break
                    t = time.perf_counter()
                    call()
                    lat.append(time.perf_counter() - t)
        rows.extend(r.summary() for r in timed.values())
    return rows


def threads_in_use(e: Engines) -> dict:
    """What the libraries will use: the chosen count, or their defaults."""
    out = {"onnxruntime": e.threads or "default (one per physical core)"}
    if "torch eager" in e.make:
        import torch

        out["pytorch"] = torch.get_num_threads()  # (set to e.threads by eager_engine)
    return out


def machine_load() -> str | None:
    """A note when other processes keep the cores busy: then PyTorch's OpenMP threads, which wait
    for each other at every layer, can run many times slower than alone (onnxruntime less so)."""
    import os

    try:
        load, cores = os.getloadavg()[0], os.cpu_count() or 1
    except OSError:  # not on this platform
        return None
    if load <= 0.75 * cores:
        return None
    return (f"this machine is busy (load average {load:.1f} on {cores} cores): expect noisy times, PyTorch's "
            "several threads most of all (--threads 1 is steadier)")
