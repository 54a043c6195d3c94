"""`train finetune(from=FILE, skip=LAYERS, map=MAP)`: start from weights trained elsewhere.

FILE is an nnc checkpoint, a PyTorch state_dict (.pth / .pt / .bin, read with
`torch.load(weights_only=True)`: tensors only, no pickled code is ever run) or a plain
.safetensors file from another tool. Another tool's names become the spec's through a name map
(compiler/namemap.py). From an nnc checkpoint, the tensors whose names and shapes match are
taken (a new head under another name, or skipped, starts fresh); from another tool, every tensor
of the model must be found and every tensor of the file used, skipped layers aside, so that a
map that misses is an error, not a half-loaded model.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from nnc.compiler import namemap
from nnc.compiler.graph import Graph
from nnc.diagnostics import NncError
from nnc.runtime import checkpoint

STATE_DICT_SUFFIXES = (".pth", ".pt", ".bin")


def _state_dict(obj, path: str) -> dict[str, torch.Tensor]:
    """A state_dict, also inside the dicts training scripts save ({"state_dict": ...}, {"model": ...})."""
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return dict(obj)
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "model_state_dict", "module"):
            if key in obj:
                return _state_dict(obj[key], path)
    raise NncError(f"{path}: holds no state_dict (a mapping of names to tensors); save model.state_dict()")


def read(path: str) -> tuple[dict[str, torch.Tensor], bool]:
    """The tensors of a weights file, and whether it is an nnc checkpoint (names already nnc's)."""
    p = Path(path)
    if not p.is_file():
        raise NncError(f"finetune: {path}: no such file")
    if p.suffix.lower() in STATE_DICT_SUFFIXES:
        try:
            with warnings.catch_warnings():  # (torch warns about pickle protocols on its way to refusing)
                warnings.simplefilter("ignore")
                obj = torch.load(str(p), map_location="cpu", weights_only=True)
        except Exception as e:  # weights_only refuses pickled code: never fall back to full unpickling
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise NncError(f"finetune: {path}: not a PyTorch file of tensors nnc can read safely ({first[:200]}); "
                           "save the state_dict of plain tensors, or convert it to .safetensors") from None
        return _state_dict(obj, path), False
    if p.suffix.lower() != ".safetensors":
        raise NncError(f"finetune: {path}: read are nnc checkpoints and .safetensors, .pth, .pt or .bin files")
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(p), framework="pt") as f:
            if (f.metadata() or {}).get("format") == checkpoint.FORMAT:
                return checkpoint.load(p).model, True
            return {k: f.get_tensor(k) for k in f.keys()}, False
    except SafetensorError as e:
        raise NncError(f"finetune: {path}: not a readable safetensors file ({e})") from None


def _skipped(name: str, skip: set[str], selectors: dict[str, tuple[str, ...]]) -> bool:
    layer = name.rsplit(".", 1)[0]
    return bool(skip & set(selectors.get(layer, layer.split("."))))


def finetune(model: torch.nn.Module, graph: Graph) -> int:
    """Load the spec's finetune weights into `model`; returns how many tensors were loaded."""
    spec = graph.spec
    ft = spec.train.finetune
    where = spec.spans.get("train.finetune")
    tensors, native = read(spec.locate(ft.path, "train"))
    if ft.map:
        rules = namemap.load(ft.map, lambda m: spec.locate(m, "train"))
        tensors = {namemap.rename(rules, k): v for k, v in tensors.items()}
    own = model.state_dict()
    skip = set(ft.skip)
    selectors = {l.path: l.selectors for l in graph.layers()}
    load, problems = {}, []
    for name, t in tensors.items():
        if _skipped(name, skip, selectors) or name not in own and native:
            continue
        if name not in own:
            problems.append(f"{name} (from the file) is no tensor of this model")
        elif own[name].shape != t.shape:
            raise NncError.at(where, f"finetune: {name} has shape {tuple(t.shape)} in {ft.path} but "
                                     f"{tuple(own[name].shape)} here",
                              help="add its layer to skip=(...) to train it from scratch")
        else:
            load[name] = t
    if not native:
        problems += [f"{n} is not in the file" for n in own if n not in load and not _skipped(n, skip, selectors)]
    if problems:
        more = f"; ... and {len(problems) - 4} more" if len(problems) > 4 else ""
        raise NncError.at(where, f"finetune: the names of {ft.path} do not match this model's"
                                 + (f" through map {ft.map}" if ft.map else "") + f": {'; '.join(problems[:4])}{more}",
                          help="give a name map (map=NAME: " + ", ".join(namemap.shipped()) + ", or a map file), "
                               "or skip the layers that are new")
    if not load:
        raise NncError.at(where, f"finetune: no tensor of {ft.path} matches a layer of this model by name "
                                 f"(it has {', '.join(sorted({n.rsplit('.', 1)[0] for n in tensors})[:6])}, ...)",
                          help="the layers to carry over must keep their names in the new spec")
    model.load_state_dict(load, strict=False)
    return len(load)
