"""Graph -> standalone PyTorch source: one readable file that imports only torch.

The module tree mirrors `torch_module` (children named after the layers, residual blocks as
their own classes, the shortcut as `proj` / `proj_bn`), so a checkpoint's state_dict loads
unchanged. Each layer's constructor comes from its `LayerDef.python`; forward() carries the
shape after every layer as a comment. The output is deterministic: same spec, same bytes.
"""

from __future__ import annotations

import builtins
import keyword
from pathlib import Path

from nnc.compiler.graph import Graph, Info, LayerInfo, ResidualInfo
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


def _ref(name: str) -> str:
    return f"self.{name}" if name.isidentifier() and not keyword.iskeyword(name) else f"self._modules[{name!r}]"


def _init_line(name: str, ctor: str) -> str:
    if name.isidentifier() and not keyword.iskeyword(name):
        return f"self.{name} = {ctor}"
    return f"self.add_module({name!r}, {ctor})"


def _init_call(dist, target: str) -> str:
    """The spec's initialization of one tensor as a torch.nn.init call (initializers.Dist)."""
    if dist.kind == "normal":
        return f"nn.init.normal_({target}, mean={dist.b!r}, std={dist.a!r})"
    if dist.kind == "uniform":
        return f"nn.init.uniform_({target}, a={dist.a!r}, b={dist.b!r})"
    if dist.kind == "orthogonal":
        return f"nn.init.orthogonal_({target}, gain={dist.a!r})"
    return f"nn.init.constant_({target}, {dist.a!r})"


def _indented(inits: list[str]) -> list[str]:
    return [f"        {line}" for i in inits for line in i.split("\n")]


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


class _Writer:
    def __init__(self, graph: Graph):
        self.graph = graph
        self.classes: list[str] = []  # residual block classes, in order of first use
        self.uses_maxout = False
        self.main = class_name(graph)
        self.taken = RESERVED | {self.main}  # class names given out: blocks never shadow one another

    def unique(self, base: str) -> str:
        """`base`, or `base_2`, `base_3`, ...: blocks `a_1` and `a1` both read A1, a block `res1` in a
        model `Res1` reads Res1; each needs its own class (a clash replaced one, or recursed forever)."""
        name, k = base, 1
        while name in self.taken:
            k += 1
            name = f"{base}_{k}"
        self.taken.add(name)
        return name

    def layer(self, info: LayerInfo) -> tuple[str, list[str]]:
        d = LAYERS[info.kind]
        if d.python is None:
            raise NncError(f"{info.name}: layer kind {info.kind!r} has no PyTorch source template")
        src = d.python(info.params, info.input)
        ctor, forward = (src, ("x = {m}(x)",)) if isinstance(src, str) else src
        self.uses_maxout |= info.kind == "maxout"
        n_params = f"  # {info.n_params:,} parameters" if info.n_params else ""
        init = "\n".join([_init_line(info.name, ctor) + n_params,
                          *(_init_call(dist, f"{_ref(info.name)}.{tensor}") for tensor, dist, rule in info.init
                            if rule != "fixed")])  # (norm scales 1, shifts 0, prelu 0.25: torch's own defaults)
        lines = [f.format(m=_ref(info.name)) for f in forward]
        lines[-1] += f"  {shape_comment(info.output)}"
        return init, lines

    def node(self, info: Info) -> tuple[str, list[str]]:
        if isinstance(info, LayerInfo):
            return self.layer(info)
        cls = self.residual(info)
        return _init_line(info.name, f"{cls}()"), [f"x = {_ref(info.name)}(x)  {shape_comment(info.output)}"]

    def residual(self, info: ResidualInfo) -> str:
        name = self.unique(_python_class(_class_name(info.path)))
        inits, body = [], []
        for n in info.body:
            i, f = self.node(n)
            inits.append(i)
            body += f
        if info.proj:
            conv, bn = info.proj
            for p in (conv, bn):
                inits.append(self.layer(p)[0])
            shortcut = f"{_ref(bn.name)}({_ref(conv.name)}(x))"
        else:
            shortcut = "x"
        lines = [f"class {name}(nn.Module):",
                 (f'    """Residual block {_docstring_text(info.path)}: body(x) + '
                  f'{"batchnorm(1x1 conv(x))" if info.proj else "x"}; {info.input} -> {info.output}."""'), "",
                 "    def __init__(self):", "        super().__init__()"]
        lines += _indented(inits)
        lines += ["", "    def forward(self, x: torch.Tensor) -> torch.Tensor:", f"        shortcut = {shortcut}"]
        lines += [f"        {b}" for b in body]
        lines += ["        return x + shortcut"]
        self.classes.append("\n".join(lines))
        return name

    def module(self, digest: str) -> str:
        from nnc.version import __version__

        graph = self.graph
        spec = graph.spec
        inits, body = [], []
        for n in graph.nodes:
            i, f = self.node(n)
            inits.append(i)
            body += f
        name = self.main
        x_dtype = "token ids (int64)" if graph.input.kind == "tokens" else "float32, preprocessed"
        head = [(f'"""{_docstring_text(spec.model.name)}: generated by nnc {__version__} from '
                 f'{_docstring_text(Path(spec.document.name).name)}'),
                f"(spec sha256 {digest}). Standalone: imports only torch.", "",
                f"Input: {x_dtype}, {shape_comment(graph.input)[2:]}; output: {shape_comment(graph.output)[2:]}.",
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
        head += ['"""', "", "import torch", "from torch import nn"]
        parts = ["\n".join(head)]
        if self.uses_maxout:
            parts.append(MAXOUT.strip("\n"))
        parts += self.classes
        main = [f"class {name}(nn.Module):", "    def __init__(self):", "        super().__init__()"]
        main += _indented(inits)
        main += ["", "    def forward(self, x: torch.Tensor) -> torch.Tensor:",
                 f"        {shape_comment(graph.input)}"]
        main += [f"        {b}" for b in body]
        main += ["        return x"]
        parts.append("\n".join(main))
        return "\n\n\n".join(parts) + "\n"


def generate(graph: Graph) -> str:
    """The source text of a module equivalent to `torch_module.build_model(graph)` (weights aside)."""
    w = _Writer(graph)
    w.uses_maxout = any(l.kind == "maxout" for l in graph.layers())
    return w.module(graph.spec.sha256)
