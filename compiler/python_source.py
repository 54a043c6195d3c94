"""Graph -> standalone PyTorch source: one readable file that imports only torch.

The module tree mirrors `torch_module` (children named after the layer paths, groups such as
residual blocks and block uses as plain nn.Module containers, the shortcut as `proj` /
`proj_bn`), so a checkpoint's state_dict loads unchanged. Each layer's constructor comes from its
`LayerDef.python`; forward() is the graph's straight-line program (compiler/forward.py) with the
shape after every layer as a comment. The output is deterministic: same spec, same bytes.
"""

from __future__ import annotations

import builtins
import keyword
from pathlib import Path

from nnc.compiler.forward import module_ref, program, statements
from nnc.compiler.graph import Graph, LayerInfo
from nnc.compiler.layers import LAYERS
from nnc.compiler.layers.base import Shape
from nnc.diagnostics import NncError, printable

# nnc.compiler.modules.Maxout, as text: this module builds source without importing torch
# (tests/test_compile.py keeps the two the same)
MAXOUT = '''

class Maxout(nn.Module):
    """Max over groups of `pieces` consecutive features along `dim`."""

    def __init__(self, pieces: int, dim: int):
        super().__init__()
        self.pieces, self.dim = pieces, dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dim = self.dim % x.dim()
        shape = x.shape[:dim] + (x.shape[dim] // self.pieces, self.pieces) + x.shape[dim + 1:]
        return x.reshape(shape).amax(dim + 1)
'''


def shape_comment(s: Shape) -> str:
    return "# (" + ", ".join(["B", *map(str, s.dims)]) + ")"


def _assign(path: str, value: str) -> str:
    """`self.a.b = value`, or setattr(...) where the last part is a Python keyword (a layer named `pass`)."""
    parent, _, leaf = path.rpartition(".")
    if leaf.isidentifier() and not keyword.iskeyword(leaf):
        return f"{module_ref(path)} = {value}"
    return f"setattr({module_ref(parent) if parent else 'self'}, {leaf!r}, {value})"


def _init_call(dist, target: str) -> str:
    """The spec's initialization of one tensor as a torch.nn.init call (initializers.Dist)."""
    if dist.kind == "normal":
        return f"nn.init.normal_({target}, mean={dist.b!r}, std={dist.a!r})"
    if dist.kind == "uniform":
        return f"nn.init.uniform_({target}, a={dist.a!r}, b={dist.b!r})"
    if dist.kind == "orthogonal":
        return f"nn.init.orthogonal_({target}, gain={dist.a!r})"
    return f"nn.init.constant_({target}, {dist.a!r})"


def _class_name(path: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in path.replace(".", "_").split("_") if part) or "Block"


# module-level names of the generated file that no generated class may take: its imports, and the
# builtins (a class `super` would break every `super().__init__()` after it)
RESERVED = {"torch", "nn", "Maxout"} | set(dir(builtins))


def _python_class(n: str) -> str:
    """`n` as a class name that is valid Python and shadows nothing the file uses."""
    if not n.isidentifier() or keyword.iskeyword(n):
        n = _class_name(n)
    if not n.isidentifier():  # e.g. a name that starts with a digit
        n = f"M{n}"
    return f"{n}Model" if n in RESERVED or keyword.iskeyword(n) else n


def class_name(graph: Graph) -> str:
    """The model's class: the spec's model name where it is a usable Python class name."""
    return _python_class(graph.spec.model.name)


def _docstring_text(text: str) -> str:
    """Text from the spec or a checkpoint (a file name, a model name) inside a triple-quoted
    docstring: no quote or backslash may end the string early, no control character survives."""
    return printable(text).replace("\\", "\\\\").replace('"', '\\"')


def _layer_init(info: LayerInfo) -> list[str]:
    """`self.a.b = nn.Conv2d(...)  # N parameters` and the spec's initialization of its tensors."""
    d = LAYERS[info.kind]
    if d.python is None:
        raise NncError(f"{info.name}: layer kind {info.kind!r} has no PyTorch source template")
    src = d.python(info.params, info.input)
    ctor = src if isinstance(src, str) else src[0]
    ref = module_ref(info.path)
    n_params = f"  # {info.n_params:,} parameters" if info.n_params else ""
    return [_assign(info.path, ctor) + n_params,
            *(_init_call(dist, f"{ref}.{tensor}") for tensor, dist, rule in info.init
              if rule != "fixed")]  # (norm scales 1, shifts 0, prelu 0.25: torch's own defaults)


def _layer_forward(info: LayerInfo, src: str, dst: str) -> list[str]:
    """The layer's forward lines, reading `src` into `dst` (the templates read and write x)."""
    d = LAYERS[info.kind]
    made = d.python(info.params, info.input)
    templates = ("x = {m}(x)",) if isinstance(made, str) else made[1]
    if len(templates) == 1 and templates[0] == "x = {m}(x)":
        return [f"{dst} = {module_ref(info.path)}({src})  {shape_comment(info.output)}"]
    lines = ([f"x = {src}"] if src != "x" else []) + [t.format(m=module_ref(info.path)) for t in templates]
    lines[-1] += f"  {shape_comment(info.output)}"
    return lines + ([f"{dst} = x"] if dst != "x" else [])


def _inits(graph: Graph) -> list[str]:
    """Containers for the groups (self.layer1 = nn.Module()), then each layer, in order."""
    out, made = [], set()
    for l in graph.modules():
        parts = l.path.split(".")
        for i in range(1, len(parts)):
            scope = ".".join(parts[:i])
            if scope not in made:
                made.add(scope)
                group = next((g for g in graph.groups if g.path == scope), None)
                note = f"  # {printable(group.label)}" if group else ""
                out.append(_assign(scope, "nn.Module()") + note)
        out += _layer_init(l)
    return out


def _head(graph: Graph, digest: str, name: str) -> list[str]:
    from nnc.version import __version__

    spec = graph.spec
    x_dtype = "token ids (int64)" if graph.input.kind == "tokens" else "float32, preprocessed"
    ins = ", ".join(f"{n} {shape_comment(s)[2:]}" for n, s in graph.inputs) if len(graph.inputs) > 1 else \
        shape_comment(graph.input)[2:]
    outs = ", ".join(f"{n} {shape_comment(s)[2:]}" for n, _, s in graph.outputs) if len(graph.outputs) > 1 else \
        shape_comment(graph.output)[2:]
    head = [(f'"""{_docstring_text(spec.model.name)}: generated by nnc {__version__} from '
             f'{_docstring_text(Path(spec.document.name).name)}'),
            f"(spec sha256 {digest}). Standalone: imports only torch.", "",
            f"Input: {x_dtype}, {ins}; output: {outs}" + (" (a tuple)." if len(graph.outputs) > 1 else "."),
            "Initialized as the spec says (`nnc show` lists it per layer; the random draws are not nnc's).",
            "Parameter names match nnc's, so a checkpoint's weights load unchanged:", "",
            "    from safetensors.torch import load_file",
            '    tensors = load_file("best.safetensors")',
            f"    model = {name}()",
            '    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model/")})',
            "    model.eval()"]
    if spec.data.preprocess and graph.input.kind != "tokens":
        head += ["", "The spec preprocesses its inputs; do the same with the checkpoint's statistics:", "",
                 '    x = (raw - tensors["pre/mean"]) / tensors["pre/std"]'
                 + ('  # then x @ tensors["pre/proj"]' if any(c.kind in ("pca", "whiten")
                                                              for c in spec.data.preprocess) else "")]
    return head + ['"""', "", "import torch", "from torch import nn"]


def generate(graph: Graph) -> str:
    """The source text of a module equivalent to `torch_module.build_model(graph)` (weights aside)."""
    name = class_name(graph)
    parts = ["\n".join(_head(graph, graph.spec.sha256, name))]
    if any(l.kind == "maxout" for l in graph.layers()):
        parts.append(MAXOUT.strip("\n"))
    prog = program(graph)
    body = statements(prog, _layer_forward)
    ret = prog.returns[0] if len(prog.returns) == 1 else f"{', '.join(prog.returns)}"
    main = [f"class {name}(nn.Module):", "    def __init__(self):", "        super().__init__()"]
    main += [f"        {line}" for i in _inits(graph) for line in i.split("\n")]
    main += ["", f"    def forward(self, {', '.join(prog.args)}) -> torch.Tensor:"
                 if len(prog.returns) == 1 else f"    def forward(self, {', '.join(prog.args)}):",
             *(f"        {shape_comment(s)}  {n}" if len(graph.inputs) > 1 else f"        {shape_comment(s)}"
               for (n, s) in graph.inputs)]
    main += [f"        {b}" for b in body]
    main += [f"        return {ret}"]
    parts.append("\n".join(main))
    return "\n\n\n".join(parts) + "\n"
