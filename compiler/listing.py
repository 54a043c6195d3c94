"""`nnc show`: the lecture-style listing, the per-layer table and its JSON form."""

from __future__ import annotations

from nnc.compiler.graph import Graph, LayerInfo, ResidualInfo
from nnc.compiler.layers import LAYERS
from nnc.compiler.spec import DEFAULTS, SECTIONS
from nnc.compiler.values import format_value


def flops(n: int) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(n)


def lecture_lines(graph: Graph) -> list[str]:
    """[55x55x96] CONV1: 96 11x11 filters at stride 4, pad 0 -- layers without a label
    (activations, dropout, flatten) are left out, as in the notes."""
    lines = [f"[{graph.input.listing}] INPUT"]

    def walk(nodes, indent=""):
        for n in nodes:
            if isinstance(n, ResidualInfo):
                how = "1x1 projection shortcut" if n.proj else "identity shortcut"
                lines.append(f"{indent}[{n.output.listing}] {n.name.upper()}: residual block, {how}")
                walk(n.body, indent + "    ")
            elif not n.implicit and LAYERS[n.kind].label:
                lines.append(f"{indent}[{n.output.listing}] {LAYERS[n.kind].label(n.name, n.params)}")
    walk(graph.nodes)
    return lines


def _init_text(l: LayerInfo) -> str:
    return "; ".join(f"{t} {rule} {d}" if t.startswith("weight") else f"{t} {d}"
                     for t, d, rule in l.init if rule != "fixed")


def print_listing(graph: Graph, resolved: bool = False) -> None:
    import shutil

    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False, width=max(shutil.get_terminal_size((140, 24)).columns, 120))
    spec = graph.spec
    console.print(f"[bold]{spec.model.name}[/bold]: {graph.n_params:,} parameters, "
                  f"{flops(graph.flops)}FLOPs per example (a multiply-add counts 2)")
    for line in lecture_lines(graph):
        console.print(line, markup=False)
    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    for col, just in (("layer", "left"), ("kind", "left"), ("output", "right"), ("params", "right"),
                      ("FLOPs", "right"), ("init", "left")):
        table.add_column(col, justify=just)
    for l in graph.layers():
        table.add_row(l.path, l.kind + (" (auto)" if l.implicit else ""), l.output.listing,
                      f"{l.n_params:,}", flops(l.flops), _init_text(l))
    table.add_row("total", "", "", f"{graph.n_params:,}", flops(graph.flops), "", style="bold")
    console.print()
    console.print(table)
    from nnc.compiler.data_plan import describe

    console.print()
    console.print(describe(spec), markup=False)
    if resolved:
        console.print()
        for section, text, origin in resolved_sections(graph):
            console.print(f"{section:<10} {text}  [dim]({origin})[/dim]")


def resolved_sections(graph: Graph) -> list[tuple[str, str, str]]:
    """Every section, with its defaults filled in and where it came from."""
    spec = graph.spec
    rows = []
    texts = {
        "init": ", ".join(f"{r.layer + ' ' if r.layer else ''}{r.target} {r.init}" +
                          (f" before {r.before}" if r.before else "") for r in spec.init),
        "loss": str(spec.loss),
        "regularize": _fields(spec.regularize),
        "optimizer": str(spec.optimizer.choice) + "".join(f", {k}({', '.join(f'{n}={f:g}' for n, f in m.items())})"
                                                          for k, m in (("lr_mult", spec.optimizer.lr_mult),
                                                                       ("decay_mult", spec.optimizer.decay_mult)) if m),
        "schedule": (f"warmup({', '.join(f'{k}={v}' for k, v in spec.schedule.warmup.model_dump().items() if v)}), "
                     if spec.schedule.warmup else "") + str(spec.schedule.main),
        "data": ", ".join([str(spec.data.source), f"val {spec.data.val:g}", f"test {spec.data.test:g}",
                           f"seed {spec.data.seed}", f"cache {spec.data.cache}", f"max_bad {spec.data.max_bad:g}"] +
                          ([f"workers {spec.data.workers}"] if spec.data.workers is not None else []) +
                          ([f"preprocess {' '.join(map(str, spec.data.preprocess))}"] if spec.data.preprocess else []) +
                          ([f"augment {' '.join(map(str, spec.data.augment))}"] if spec.data.augment else [])),
        "train": _fields(spec.train),
    }
    overridden = {o.split("=")[0].split(".")[0] for o in spec.overrides}
    for s in SECTIONS[1:]:
        origin = f"line {spec.spans[s].line}" if s in spec.spans and spec.spans[s].line else f"default: {DEFAULTS[s]}"
        if s in overridden:
            origin += ", with --set"
        rows.append((s, texts[s], origin))
    return rows


def _fields(params) -> str:
    """`key value` pairs of a section, nested options as calls: early_stop(patience=8, ...)."""
    out = []
    for k, v in params.model_dump(by_alias=True).items():
        if v is None or v == ():
            continue
        if isinstance(v, dict):
            v = "(" + ", ".join(f"{a}={format_value(b)}" for a, b in v.items() if b is not None) + ")"
            out.append(f"{k}{v}")
        else:
            out.append(f"{k} {format_value(v)}")
    return ", ".join(out)


def _data_plan(spec) -> dict:
    from nnc.compiler.data_plan import plan
    from nnc.diagnostics import NncError

    try:
        p = plan(spec)
    except NncError as e:
        return {"cache": None, "why": e.diagnostics[0].message}
    return {"cache": p.cache, "why": p.why, "examples": p.extent.n if p.extent else None,
            "bytes": p.extent.nbytes if p.extent else None}


def listing_json(graph: Graph, resolved: bool = False) -> dict:
    def layer(l: LayerInfo) -> dict:
        return {"name": l.name, "path": l.path, "kind": l.kind, "implicit": l.implicit,
                "input": str(l.input), "output": str(l.output), "output_dims": list(l.output.dims),
                "params": l.n_params, "flops": l.flops, "line": l.span.line,
                "init": [{"tensor": t, "dist": str(d), "rule": r} for t, d, r in l.init]}
    return {
        "name": graph.spec.model.name,
        "input": str(graph.input),
        "output": str(graph.output),
        "params": graph.n_params,
        "flops": graph.flops,
        "listing": lecture_lines(graph),
        "layers": [layer(l) for l in graph.layers()],
        "warnings": [{"line": w.span.line if w.span else None, "message": w.message} for w in graph.warnings],
        "data": _data_plan(graph.spec),
    } | ({"resolved": {s: {"text": text, "origin": origin} for s, text, origin in resolved_sections(graph)}}
         if resolved else {})
