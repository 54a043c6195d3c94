"""nnc: compile declarative .nnspec files into checked PyTorch modules and ONNX graphs.

    import nnc
    spec = nnc.load_spec("specs/alexnet.nnspec")
    graph = nnc.check(spec)          # shapes, params, FLOPs (no torch needed)
    model = nnc.build_model(graph)   # a torch.nn.Module with the spec's init
    run = nnc.train("specs/digits_mlp.nnspec", data=(x, y), epochs=5)   # docs/python.md

The names are imported on first use, so that `import nnc.diagnostics` (or `nnc check`)
pays for nothing it does not need.
"""

from __future__ import annotations

from nnc.version import __version__

_API = {  # public name -> the module that defines it
    "NncError": "nnc.diagnostics",
    "Graph": "nnc.compiler.graph",
    "check": "nnc.compiler.checks",
    "Spec": "nnc.compiler.spec",
    "load_spec": "nnc.compiler.load",
    "load_text": "nnc.compiler.load",
    # the notebook API (docs/python.md)
    "Run": "nnc.api",
    "train": "nnc.api",
    "evaluate": "nnc.api",
    "export": "nnc.api",
    "doctor": "nnc.api",
    "search": "nnc.api",
    "load": "nnc.api",
}


def __getattr__(name: str):
    if name not in _API:
        raise AttributeError(f"module 'nnc' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_API[name]), name)
    globals()[name] = value  # once
    return value


def build_model(spec_or_graph, seed: int | None = None):
    """A torch.nn.Module for a Spec or a Graph (imports torch)."""
    from nnc.compiler.checks import check
    from nnc.compiler.graph import Graph
    from nnc.compiler.torch_module import build_model as _build

    graph = spec_or_graph if isinstance(spec_or_graph, Graph) else check(spec_or_graph)
    return _build(graph, seed)


__all__ = ["Graph", "NncError", "Run", "Spec", "__version__", "build_model", "check", "doctor", "evaluate", "export",
           "load", "load_spec", "load_text", "search", "train"]
