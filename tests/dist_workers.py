"""What the processes of tests/test_distributed.py run: each is one rank of a gloo group on the CPU,
set up from the environment as torchrun sets it up. Results go to files in `out`."""

import json
import os
import signal
import sys
from pathlib import Path


def entry(fn_name: str, rank: int, size: int, port: int, out: str, args: tuple) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(size), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(size),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    import torch

    torch.set_num_threads(1)
    globals()[fn_name](rank, Path(out), *args)


def _graph(text: str):
    from nnc.compiler.checks import check
    from nnc.compiler.load import load_text

    return check(load_text(text, "m.nnspec"))


def scenarios(rank: int, out: Path, text: str, steps: int, cases: list) -> None:
    """In one process group: `grads_and_params`, then `runs`."""
    import torch.distributed as dist

    dist.init_process_group("gloo")
    grads_and_params(rank, out, text, steps)
    runs(rank, out, cases)
    dist.destroy_process_group()


def grads_and_params(rank: int, out: Path, text: str, steps: int) -> None:
    """The gradients of the first step and the parameters after `steps` steps, as this rank has them."""
    import torch

    from nnc.runtime import distributed
    from nnc.runtime.train import batches, prepare, step

    world, dev = distributed.from_env(), torch.device("cpu")
    s, _ = prepare(_graph(text), out / "run", dev, world, None)
    it = batches(s, 0)
    for i in range(steps):
        xb, yb, n = next(it)
        step(s, xb, yb, n, False, (), None)
        if i == 0:
            torch.save({k: p.grad.clone() for k, p in s.model.named_parameters()}, out / f"grads{rank}.pt")
    torch.save({k: p.detach().clone() for k, p in s.model.named_parameters()}, out / f"params{rank}.pt")


class _Callback:
    def start(self, run): pass
    def before_step(self, run): pass
    def epoch_end(self, run, rec): pass
    def end(self, run): pass
    def after_step(self, run): pass


class KillAt(_Callback):
    """SIGKILL-like death of this process at a step of an epoch (after that epoch's start)."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def after_step(self, run):
        if run.epoch == self.epoch:
            os._exit(9)


class SignalAt(_Callback):
    """Ctrl-C reaching this process alone, at the first sampled step of an epoch."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def after_step(self, run):
        if run.epoch == self.epoch:
            os.kill(os.getpid(), signal.SIGINT)
            self.epoch = -1


def runs(rank: int, out: Path, cases: list) -> None:
    """Train each case (name, spec text, callback on rank 0 or 1, or None); record how each ended:
    its final metrics, or the exit code it raised."""
    from nnc.diagnostics import NncError
    from nnc.runtime.train import train

    results = {}
    import time

    for name, text, where, cb in cases:
        t0 = time.perf_counter()
        callbacks = [globals()[cb[0]](*cb[1:])] if cb and where == rank else []
        data = _digits_dataset(name) if name.startswith("dataset") else None
        try:
            results[name] = train(_graph(text), out / name, device="cpu", quiet=True, callbacks=callbacks, data=data)
        except NncError as e:
            results[name] = {"exit": e.exit_code, "message": str(e)}
        except KeyboardInterrupt:
            results[name] = {"exit": 130}
        results[name]["seconds"] = time.perf_counter() - t0
    (out / f"results{rank}.json").write_text(json.dumps(results))


def _digits_dataset(name: str):
    """The digits as a torch Dataset handed over as the Python API does (streamed); in the case
    "dataset_bad", one item of the training split is not an (x, y) pair."""
    import torch

    from nnc.compiler.vocab.sources import SOURCES
    from nnc.runtime.stream import UserDataset

    digits = SOURCES["digits"].load(None, None, None)

    class Digits(torch.utils.data.Dataset):
        def __len__(self):
            return len(digits.x)

        def __getitem__(self, i):
            return "not a pair" if name == "dataset_bad" and i == 1000 else (digits.x[i], digits.y[i])

    return UserDataset(Digits())


def killed(rank: int, out: Path, text: str, epoch: int) -> None:
    """Rank 0 dies in `epoch`; the other rank's next collective fails."""
    from nnc.runtime.train import train

    train(_graph(text), out / "cut", device="cpu", quiet=True, callbacks=[KillAt(epoch)] if rank == 0 else [])
    sys.exit(0)
