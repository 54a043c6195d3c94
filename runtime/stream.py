"""Data streamed from disk, for sources larger than memory (`data ..., cache stream`, or auto).

Examples are read in DataLoader worker processes a whole batch at a time: image files decoded
with Pillow into uint8 (channels-last, as the files are), .npy / .npz arrays through memory maps,
a torch Dataset handed to the Python API item by item. The workers also augment, so the main
process only moves each batch to the device (pinned, on a GPU), converts it to float and applies
the preprocessing statistics there. What is in memory at
once is bounded by the workers' prefetched batches, whatever the size of the data.

An image that cannot be read is skipped and reported with the batch (runtime/feeds.py counts them
and stops the run past `data max_bad`). Augmentation is seeded per example by (train seed, epoch,
example), so it does not depend on the number of workers or processes.
"""

from __future__ import annotations

import math
import struct
import zipfile
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from nnc.compiler.vocab.augment import augment_batch, draws, resized_crop_boxes
from nnc.compiler.vocab.sources import image_array, unreadable
from nnc.diagnostics import NncError

FATAL = -1  # the index of a `bad` entry that is an error in the data, not a file to skip


def uniforms(seed: int, epoch: int, idx: np.ndarray, k: int) -> np.ndarray:
    """(len(idx), k) uniform draws in [0, 1), a hash (SplitMix64) of (seed, epoch, example, j):
    the same example in the same epoch draws the same numbers in any worker or process."""
    with np.errstate(over="ignore"):
        x = (np.uint64(seed % 2**63) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(epoch + 1) * np.uint64(0xD1B54A32D192ED03)
             + idx.astype(np.uint64)[:, None] * np.uint64(0xBF58476D1CE4E5B9)
             + np.arange(k, dtype=np.uint64)[None] * np.uint64(0x94D049BB133111EB))
        for shift, mult in ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB)):
            x = (x ^ (x >> np.uint64(shift))) * np.uint64(mult)
        x ^= x >> np.uint64(31)
    return ((x >> np.uint64(11)).astype(np.float64) * 2.0 ** -53).astype(np.float32)


class ImageFiles(torch.utils.data.Dataset):
    """Item (epoch, indices) -> (uint8 (b, C, H, W) in channels-last memory, labels, unreadable).
    epoch < 0: no augmentation (evaluation, statistics)."""

    def __init__(self, files: list[str], labels: np.ndarray, dims: tuple[int, int, int], steps: list, seed: int):
        self.files, self.labels, self.dims, self.steps, self.seed = files, labels, dims, steps, seed

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, item):
        from PIL import Image

        epoch, idx = item
        c, h, w = self.dims
        steps = self.steps if epoch >= 0 else []
        u = uniforms(self.seed, epoch, idx, draws(steps)) if steps else None
        rrc = bool(steps) and steps[0][0] == "random_resized_crop"
        out = np.empty((len(idx), h, w, c), np.uint8)
        keep, bad = [], []
        for j, i in enumerate(idx):
            try:
                with Image.open(self.files[i]) as im:
                    box = None
                    if rrc:
                        size = torch.tensor([float(im.size[0])]), torch.tensor([float(im.size[1])])
                        box = tuple(resized_crop_boxes(torch.from_numpy(u[j:j + 1, :4]), *size, steps[0][1])[0].tolist())
                    a = image_array(im, c, h, w, box)
                out[len(keep)] = a if a.dtype == np.uint8 else np.clip(np.rint(a), 0, 255)
                keep.append(j)
            except Exception as e:  # noqa: BLE001 (Pillow's failures have no common base)
                bad.append((int(i), self.files[i], unreadable(e)))
        x = torch.from_numpy(out[:len(keep)]).permute(0, 3, 1, 2)
        if steps and len(keep) and (len(steps) > 1 or not rrc):
            x = augment_batch(x.float(), steps, torch.from_numpy(u[keep]), 255.0, skip_first_crop=rrc)
            x = x.round_().clamp_(0, 255).to(torch.uint8).contiguous(memory_format=torch.channels_last)
        return x, torch.from_numpy(self.labels[idx[keep]]), bad


class ArrayRows(torch.utils.data.Dataset):
    """Item (epoch, indices) -> (rows of a memory-mapped array in the input's layout, targets,
    problems). Rows are read in file order (sorted indices), then put back in the batch's order.
    uint8 arrays stay uint8 until they reach the device."""

    def __init__(self, path: str, key: str | None, y: np.ndarray, layout, check, steps: list, seed: int,
                 tokens: bool):
        self.path, self.key, self.y, self.layout, self.check = path, key, y, layout, check
        self.steps, self.seed, self.tokens = steps, seed, tokens
        self._x = None

    @property
    def x(self):
        if self._x is None:  # opened in each worker: a memory map is not sent between processes
            self._x = open_rows(self.path, self.key)
        return self._x

    def __len__(self) -> int:
        return len(self.y)

    def rows(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, list]:
        """(stored rows, targets, problems) of the batch's examples."""
        order = np.argsort(idx, kind="stable")
        rows = np.empty((len(idx),) + self.x.shape[1:], self.x.dtype)
        rows[order] = self.x[idx[order]]
        return rows, self.y[idx], []

    def __getitem__(self, item):
        epoch, idx = item
        rows, y, bad = self.rows(idx)
        x = self.layout.apply(rows)
        if x.dtype != np.uint8:
            x = x.astype(np.int64 if self.tokens else np.float32, copy=False)
        problem = self.check(x)
        bad = bad + [(FATAL, self.path, problem)] if problem else bad
        x = torch.from_numpy(x)
        steps = self.steps if epoch >= 0 and len(x) else []
        if steps:
            u = torch.from_numpy(uniforms(self.seed, epoch, idx, draws(steps)))
            was = x.dtype
            x = augment_batch(x.float(), steps, u, None)
            x = x.round_().clamp_(0, 255).to(torch.uint8) if was == torch.uint8 else x
        return x, torch.from_numpy(y), bad


@dataclass(frozen=True)
class UserDataset:
    """A map-style torch Dataset of (x, y) pairs handed over by the Python API, to stream."""

    dataset: Any
    classes: list[str] | None = None


class DatasetRows(ArrayRows):
    """A map-style torch Dataset of (x, y) pairs handed over by the Python API, read item by item
    in the workers and laid out and checked as arrays are. A batch with a bad item (not an (x, y)
    pair, a shape unlike the first item's, labels the loss cannot take, or an exception in the
    Dataset) comes back empty with the problem, which stops the run."""

    def __init__(self, dataset, shape: tuple, label, layout, check, steps: list, seed: int, tokens: bool):
        super().__init__("the Dataset", None, np.empty(0), layout, check, steps, seed, tokens)
        self.dataset, self.shape, self.label = dataset, shape, label

    def __len__(self) -> int:
        return len(self.dataset)

    def rows(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, list]:
        try:
            xs, ys = zip(*(self.item(int(i)) for i in idx))
            return np.stack(xs), self.label(np.stack(ys)), []
        except NncError as e:
            return np.empty((0,) + self.shape, np.float32), np.empty(0, np.int64), [(FATAL, "the Dataset", str(e))]

    def item(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        try:
            got = self.dataset[i]
        except Exception as e:  # noqa: BLE001 (the user's Dataset may raise anything)
            raise NncError(f"item {i} raised {type(e).__name__}: {e}") from None
        x, y = pair(got, i)
        if x.shape != self.shape:
            raise NncError(f"item {i}'s x has shape {x.shape}, item 0's {self.shape}")
        return x, y


def pair(item, i: int) -> tuple[np.ndarray, np.ndarray]:
    """An item of a Dataset as (x, y) arrays; NncError when it is not a pair."""
    if not isinstance(item, (tuple, list)) or len(item) != 2:
        got = f"a {type(item).__name__} of {len(item)}" if isinstance(item, (tuple, list)) else f"a {type(item).__name__}"
        raise NncError(f"item {i} is {got}, not an (x, y) pair")
    x, y = (np.asarray(v.detach().cpu().numpy() if hasattr(v, "detach") else v) for v in item)
    if x.dtype.kind not in "biuf" or y.dtype.kind not in "biuf":
        raise NncError(f"item {i} holds {x.dtype} x and {y.dtype} y, not numbers")
    return x, y


def open_rows(path: str, key: str | None) -> np.ndarray:
    """x of an .npy file, or array `key` of an uncompressed .npz, as a read-only memory map."""
    if key is None:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    with zipfile.ZipFile(path) as z:
        info = z.getinfo(key + ".npy")
    if info.compress_type != zipfile.ZIP_STORED:
        raise NncError(f"{path}: {key} is compressed (np.savez_compressed), which cannot be streamed; "
                       "save it with np.savez or as .npy files, or use cache memory")
    with open(path, "rb") as f:  # the member's data starts after its local header (30 bytes, name, extra)
        f.seek(info.header_offset + 26)
        name_len, extra_len = struct.unpack("<HH", f.read(4))
        f.seek(info.header_offset + 30 + name_len + extra_len)
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read(f)
        offset = f.tell()
    return np.memmap(path, dtype=dtype, mode="r", shape=shape, offset=offset, order="F" if fortran else "C")


class EpochItems(torch.utils.data.Sampler):
    """The DataLoader's items, set before each pass: (epoch, indices of one batch)."""

    def __init__(self):
        self.items: list = []

    def __iter__(self):
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


def _worker_init(_):
    torch.set_num_threads(1)  # a worker decodes; its augmentation ops need no thread pool of their own


def loader(dataset, workers: int, pin: bool, persistent: bool) -> tuple[torch.utils.data.DataLoader, EpochItems]:
    """Workers are forked where the system can (a worker starts in milliseconds; a process started
    with `spawn`, as Python's multiprocessing or a newer Python may default to, would re-import
    torch in every worker first). Its workers' seeds come from a generator of its own: each pass
    drawing one from torch's global generator would change the dropout masks of a run."""
    import multiprocessing

    items = EpochItems()
    fork = "fork" in multiprocessing.get_all_start_methods() and workers > 0
    dl = torch.utils.data.DataLoader(dataset, batch_size=None, sampler=items, num_workers=workers, pin_memory=pin,
                                     persistent_workers=persistent and workers > 0, worker_init_fn=_worker_init,
                                     prefetch_factor=2 if workers else None,
                                     generator=torch.Generator(),  # (not the global one: dropout's draws stay as in memory)
                                     multiprocessing_context=multiprocessing.get_context("fork") if fork else None)
    return dl, items


def default_workers(local_processes: int) -> int:
    """Worker processes per training process: the machine's CPUs shared out, at most 8 each."""
    import os

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(8, math.floor(cpus / local_processes)))


def aug_steps(spec) -> list:
    return [(c.kind, c.params) for c in spec.data.augment]

