"""`nnc show`: the lecture-style listing, the per-layer table and its JSON form."""

from __future__ import annotations

from nnc.compiler.footprint import estimate, physical_memory, size
from nnc.compiler.graph import Graph, GroupInfo, LayerInfo
from nnc.compiler.layers import LAYERS
from nnc.compiler.spec import DEFAULTS, SECTIONS
from nnc.compiler.values import format_value


def flops(n: int) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(n)


def _header(g: GroupInfo) -> str:
    if g.kind == "residual":
        how = "1x1 projection shortcut" if g.proj else "identity shortcut"
        return f"[{g.output.listing}] {g.name.upper()}: residual block, {how}"
    return f"[{g.output.listing}] {g.name.upper()}: {g.label}"


def lecture_lines(graph: Graph) -> list[str]:
    """[55x55x96] CONV1: 96 11x11 filters at stride 4, pad 0 -- layers without a label
    (activations, dropout, flatten) are left out, as in the notes. A group (residual block,
    block use, named branch) is a header over its layers, indented."""
    several = len(graph.inputs) > 1
    lines = [f"[{s.listing}] INPUT" + (f" {n.upper()}" if several else "") for n, s in graph.inputs]
    groups = {g.path: g for g in graph.groups}
    opened: set[str] = set()
    for l in graph.layers():
        parts = l.path.split(".")
        enclosing = [groups[p] for p in (".".join(parts[:i]) for i in range(1, len(parts))) if p in groups]
        for depth, g in enumerate(enclosing):
            if g.path not in opened:
                opened.add(g.path)
                lines.append("    " * depth + _header(g))
        indent = "    " * len(enclosing)
        if l.path in groups or enclosing and enclosing[-1].proj and l.path.endswith((".proj", ".proj_bn")):
            continue  # a group's own merge, a residual's shortcut: its header says them
        if l.merge:  # its sources by the names they have at its own level (branch1, not branch1.relu1)
            parent = l.path.rsplit(".", 1)[0] + "." if "." in l.path else ""
            what = ", ".join(s[len(parent):].split(".")[0] if s.startswith(parent) else s.rsplit(".", 1)[-1]
                             for s in l.sources)
            lines.append(f"{indent}[{l.output.listing}] {l.name.upper()}: {l.kind} of {what}")
        elif not l.implicit and LAYERS[l.kind].label:
            lines.append(f"{indent}[{l.output.listing}] {LAYERS[l.kind].label(l.name, l.params)}")
    if len(graph.outputs) > 1:
        lines += [f"[{s.listing}] OUTPUT {n.upper()} ({v})" for n, v, s in graph.outputs]
    return lines


def _init_text(l: LayerInfo) -> str:
    return "; ".join(f"{t} {rule} {d}" if t.startswith("weight") else f"{t} {d}"
                     for t, d, rule in l.init if rule != "fixed")


def print_listing(graph: Graph, resolved: bool = False) -> None:
    import shutil

    from rich.console import Console
    from rich.table import Table

    from nnc.compiler.data_plan import describe, try_plan

    console = Console(highlight=False, width=max(shutil.get_terminal_size((140, 24)).columns, 120))
    spec = graph.spec
    way = try_plan(spec)  # once: it may list a data folder
    console.print(f"[bold]{spec.model.name}[/bold]: {graph.n_params:,} parameters, "
                  f"{flops(graph.flops)}FLOPs per example (a multiply-add counts 2)")
    for line in memory_lines(graph, way):
        console.print(line, markup=False, soft_wrap=True)
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
    console.print()
    console.print(describe(spec, way=way), markup=False)
    if resolved:
        console.print()
        for section, text, origin in resolved_sections(graph):
            console.print(f"{section:<10} {text}  [dim]({origin})[/dim]")


def memory_lines(graph: Graph, way=None) -> list[str]:
    """The memory estimate (compiler/footprint.py), per example and in total; `way`: the data plan."""
    fp = estimate(graph, way)
    have = physical_memory()
    over = f", more than this machine's {size(have)}" if have and fp.training > have else ""
    return [(f"memory (float32, estimated): weights {size(fp.weights)}, activations {size(fp.activations)} per example "
             f"({size(fp.training_per_example)} when training)"),
            f"training: about {size(fp.training)}{over}: {fp.training_parts()}"]


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


def _memory_json(graph: Graph, way) -> dict:
    fp = estimate(graph, way)
    return {"weights": fp.weights, "activations_per_example": fp.activations,
            "training_per_example": fp.training_per_example, "training": fp.training, "batch": fp.batch,
            "optimizer_and_gradients": fp.optimizer, "data": fp.data, "machine": physical_memory()}


def _data_plan(p) -> dict:
    if isinstance(p, str):
        return {"cache": None, "why": p}
    return {"cache": p.cache, "why": p.why, "examples": p.extent.n if p.extent else None,
            "bytes": p.extent.nbytes if p.extent else None}


def listing_json(graph: Graph, resolved: bool = False) -> dict:
    from nnc.compiler.data_plan import try_plan

    way = try_plan(graph.spec)  # once: it may list a data folder

    def where(span) -> dict:
        return {"file": (span.doc or graph.spec.document).name, "line": span.line, "column": span.column}

    def layer(l: LayerInfo) -> dict:
        return {"name": l.name, "path": l.path, "kind": l.kind, "implicit": l.implicit,
                "input": str(l.input), "output": str(l.output), "output_dims": list(l.output.dims),
                "params": l.n_params, "flops": l.flops, "line": l.span.line,
                "init": [{"tensor": t, "dist": str(d), "rule": r} for t, d, r in l.init],
                "sources": list(l.sources), "defined": where(l.span),
                "uses": [{"block": u.block, "path": u.path, **where(u.span)} for u in l.trace]}

    def group(g: GroupInfo) -> dict:
        return {"kind": g.kind, "name": g.name, "path": g.path, "label": g.label, "input": str(g.input),
                "output": str(g.output), **where(g.span),
                "definition": where(g.definition) if g.definition else None}
    return {
        "name": graph.spec.model.name,
        "input": str(graph.input),
        "output": str(graph.output),
        "params": graph.n_params,
        "flops": graph.flops,
        "listing": lecture_lines(graph),
        "memory": _memory_json(graph, way),
        "layers": [layer(l) for l in graph.layers()],
        "groups": [group(g) for g in graph.groups],
        "inputs": [{"name": n, "shape": str(s)} for n, s in graph.inputs],
        "outputs": [{"name": n, "value": v, "shape": str(s)} for n, v, s in graph.outputs],
        "blocks": {b.name: {"params": [p.name for p in b.params], **where(b.span)} for b in graph.spec.blocks.values()},
        "includes": [{"file": path, **where(span)} for path, span in graph.spec.includes],
        "warnings": [{"line": w.span.line if w.span else None, "message": w.message} for w in graph.warnings],
        "data": _data_plan(way),
    } | ({"resolved": {s: {"text": text, "origin": origin} for s, text, origin in resolved_sections(graph)}}
         if resolved else {})
