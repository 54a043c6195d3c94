"""Several training processes: who this process is, the process group, the collective decisions,
and `nnc train --nproc N` (the standard launcher, torchrun, run in this process).

A process started by torchrun (ours, or the user's own with --nnodes for several machines) finds
RANK, WORLD_SIZE and LOCAL_RANK in its environment; anything else is rank 0 of 1 and never
touches torch.distributed. Every decision that stops a run (divergence, early stopping, Ctrl-C,
too many unreadable images) is taken from values every rank holds after the same all-reduce, so
all ranks stop at the same step and none is left waiting in a collective.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from dataclasses import dataclass

import torch

from nnc.diagnostics import NncError

TIMEOUT_S = 600  # a collective that waits longer than this fails (a rank died without its peers noticing)


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1

    @property
    def main(self) -> bool:
        """Rank 0: the process that writes the run's files and runs the monitors."""
        return self.rank == 0

    def shard(self, n: int) -> tuple[int, int]:
        """This rank's contiguous share [lo, hi) of n items (shares differ by one at most)."""
        return self.rank * n // self.size, (self.rank + 1) * n // self.size


def from_env() -> World:
    """The world torchrun describes in the environment; one process without it."""
    env = os.environ
    if "RANK" not in env or "WORLD_SIZE" not in env:
        return World()
    try:
        w = World(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)),
                  int(env.get("LOCAL_WORLD_SIZE", env["WORLD_SIZE"])))
    except ValueError:
        raise NncError(f"RANK={env['RANK']!r} / WORLD_SIZE={env['WORLD_SIZE']!r}: not numbers "
                       "(they are set by torchrun)") from None
    return w


def device_for(world: World, dev: torch.device) -> torch.device:
    """Each process of a machine takes its own GPU."""
    if dev.type == "cuda" and world.size > 1:
        if world.local_rank >= torch.cuda.device_count():
            raise NncError(f"process {world.local_rank} of this machine has no GPU of its own: "
                           f"{torch.cuda.device_count()} GPU(s) for {world.local_size} processes; "
                           "start as many processes per machine as it has GPUs")
        torch.cuda.set_device(world.local_rank)
        return torch.device("cuda", world.local_rank)
    return dev


@contextlib.contextmanager
def joined(world: World, dev: torch.device):
    """The process group for the block (NCCL on GPUs, gloo on CPUs), unless the caller made one."""
    import datetime

    import torch.distributed as dist

    if world.size == 1 or dist.is_initialized():
        yield
        return
    dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", rank=world.rank, world_size=world.size,
                            timeout=datetime.timedelta(seconds=TIMEOUT_S),
                            device_id=dev if dev.type == "cuda" else None)
    try:
        yield
        dist.barrier()  # the ranks leave together: none tears its end down while rank 0 still writes
    finally:
        dist.destroy_process_group()


def all_sum(t: torch.Tensor, world: World) -> torch.Tensor:
    """t summed over every rank (t itself on one process)."""
    if world.size > 1:
        import torch.distributed as dist

        dist.all_reduce(t)
    return t


def broadcast_model(model: torch.nn.Module, world: World) -> None:
    """Rank 0's parameters and buffers to every rank (after rank 0 loaded the best weights)."""
    if world.size > 1:
        import torch.distributed as dist

        with torch.no_grad():
            for t in [*model.parameters(), *model.buffers()]:
                dist.broadcast(t.data, 0)


def gather_lists(items: list, world: World) -> list:
    """Every rank's list, concatenated in rank order (small lists: unreadable files)."""
    if world.size == 1:
        return list(items)
    import torch.distributed as dist

    out = [None] * world.size
    dist.all_gather_object(out, items)
    return [x for part in out for x in part]


class StopSignal:
    """Ctrl-C (SIGINT) and SIGTERM on one of several processes: a flag that the next step's
    all-reduce carries to every rank, which then stop together at the same step. A second
    signal more than 2 s after the first (the user insisting; torchrun forwards the first at once)
    interrupts at once."""

    def __init__(self, world: World):
        self.raised = 0.0
        self.old = {}
        if world.size > 1:
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(ValueError):  # not the main thread
                    self.old[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        if self.raised and time.monotonic() - self.raised > 2.0:
            raise KeyboardInterrupt
        self.raised = self.raised or time.monotonic()

    @property
    def flag(self) -> float:
        return 1.0 if self.raised else 0.0

    def close(self) -> None:
        for sig, old in self.old.items():
            signal.signal(sig, old)


# ---------------------------------------------------------------- nnc train --nproc N


def launch(nproc: int, argv: list[str]) -> int:
    """Run `nnc train ARGV` as nproc processes on this machine with torchrun --standalone (its
    rendezvous picks a free port, so runs side by side never collide). Returns rank 0's exit
    code (a failure of another rank: its code). The ranks print their own messages."""
    import logging

    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    for name in ("torch.distributed.elastic", "torch.distributed.run"):  # its banners and failure reports:
        logging.getLogger(name).setLevel(logging.CRITICAL)  # the ranks say what went wrong themselves
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    args = parse_args(["--standalone", f"--nproc-per-node={nproc}", "--module", "nnc.cli", "train", *argv])
    try:
        run(args)
    except ChildFailedError as e:
        codes = {rank: f.exitcode for rank, f in e.failures.items()}
        code = codes.get(0, next(iter(codes.values())))
        return code if code > 0 else 128 - code  # killed by a signal: -N -> 128+N, as a shell says
    except (KeyboardInterrupt, SignalException):  # Ctrl-C: torchrun passed it on, the ranks stopped
        return 130
    except Exception as e:  # noqa: BLE001 (torchrun's own failures: a rendezvous that cannot start, ...)
        print(f"nnc: error: torchrun failed: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    return 0
