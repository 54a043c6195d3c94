"""nnc: compile declarative .nnspec files into checked PyTorch modules and ONNX graphs.

    import nnc
    spec = nnc.load_spec("specs/alexnet.nnspec")
    graph = nnc.check(spec)          # shapes, params, FLOPs (no torch needed)
    model = nnc.build_model(graph)   # a torch.nn.Module with the spec's init
"""

from __future__ import annotations

__version__ = "0.1.0"

from nnc.compiler.checks import check
from nnc.compiler.graph import Graph
from nnc.compiler.load import load_spec, load_text
from nnc.compiler.spec import Spec
from nnc.diagnostics import NncError


def build_model(spec_or_graph, seed: int | None = None):
    """A torch.nn.Module for a Spec or a Graph (imports torch)."""
    from nnc.compiler.torch_module import build_model as _build

    graph = spec_or_graph if isinstance(spec_or_graph, Graph) else check(spec_or_graph)
    return _build(graph, seed)


__all__ = ["Graph", "NncError", "Spec", "build_model", "check", "load_spec", "load_text", "__version__"]
