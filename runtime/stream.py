"""Data streamed from disk, for sources larger than memory (`data ..., cache stream`, or auto).

Examples are read in DataLoader worker processes a whole batch at a time: image files decoded
with Pillow into uint8 (channels-last, as the files are), .npy / .npz arrays through memory maps.
The workers also augment, so the main process only moves each batch to the device (pinned, on a
GPU), converts it to float and applies the preprocessing statistics there. What is in memory at
once is bounded by the workers' prefetched batches, whatever the size of the data.

An image that cannot be read is skipped and reported with the batch (runtime/feeds.py counts them
and stops the run past `data max_bad`). Augmentation is seeded per example by (train seed, epoch,
example), so it does not depend on the number of workers or processes.
"""

from __future__ import annotations

import math
import struct
import zipfile

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

    def __getitem__(self, item):
        epoch, idx = item
        order = np.argsort(idx, kind="stable")
        rows = np.empty((len(idx),) + self.x.shape[1:], self.x.dtype)
        rows[order] = self.x[idx[order]]
        x = self.layout.apply(rows)
        if x.dtype != np.uint8:
            x = x.astype(np.int64 if self.tokens else np.float32, copy=False)
        problem = self.check(x)
        bad = [(FATAL, self.path, problem)] if problem else []
        x = torch.from_numpy(x)
        steps = self.steps if epoch >= 0 else []
        if steps:
            u = torch.from_numpy(uniforms(self.seed, epoch, idx, draws(steps)))
            was = x.dtype
            x = augment_batch(x.float(), steps, u, None)
            x = x.round_().clamp_(0, 255).to(torch.uint8) if was == torch.uint8 else x
        return x, torch.from_numpy(self.y[idx]), bad


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
    torch in every worker first)."""
    import multiprocessing

    items = EpochItems()
    fork = "fork" in multiprocessing.get_all_start_methods() and workers > 0
    dl = torch.utils.data.DataLoader(dataset, batch_size=None, sampler=items, num_workers=workers, pin_memory=pin,
                                     persistent_workers=persistent and workers > 0, worker_init_fn=_worker_init,
                                     prefetch_factor=2 if workers else None,
                                     multiprocessing_context=multiprocessing.get_context("fork") if fork else None)
    return dl, items


def default_workers(local_processes: int) -> int:
    """Worker processes per training process: the machine's CPUs shared out, at most 8 each."""
    import os

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(8, math.floor(cpus / local_processes)))


def aug_steps(spec) -> list:
    return [(c.kind, c.params) for c in spec.data.augment]

