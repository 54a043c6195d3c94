"""What an editor asks about a spec, answered from the front end without torch: the diagnostics,
hover text, completions, definitions, the outline and the model's size. Plain data out; the
language server (nnc/language_server.py) turns it into LSP messages.

Positions are 0-based (line, column), as editors count; spans are nnc's 1-based ones."""

from __future__ import annotations

from dataclasses import dataclass, field

from nnc.compiler import cursor as C
from nnc.compiler import words as W
from nnc.compiler.checks import check
from nnc.compiler.graph import Graph, GroupInfo, LayerInfo
from nnc.compiler.listing import flops
from nnc.compiler.load import load_text
from nnc.compiler.model_block import names_layer
from nnc.compiler.spec import Spec
from nnc.diagnostics import Diagnostic, NncError, Span


@dataclass
class Analysis:
    """One version of a document, read as `nnc check` reads it."""

    text: str
    spec: Spec | None = None
    graph: Graph | None = None
    diagnostics: list[Diagnostic] = field(default_factory=list)


def analyze(text: str, name: str) -> Analysis:
    out = Analysis(text)
    try:
        out.spec = load_text(text, name)
        out.graph = check(out.spec)
        out.diagnostics = list(out.graph.warnings)
    except NncError as e:
        out.diagnostics = list(e.diagnostics)
    return out


# ---------------------------------------------------------------- facts about the model


def _names(graph: Graph | None) -> dict[str, LayerInfo | GroupInfo]:
    """The layers and groups (residual blocks, block uses) by the names rules may give them:
    their paths (layer2.block1.conv1) and the names written in the model block itself."""
    if graph is None:
        return {}
    found: dict = {}
    for n in (*(l for l in graph.layers() if not l.implicit), *graph.groups):
        found.setdefault(n.path, n)
        if not n.trace:  # a name written in the model block (not inside a block's definition)
            found.setdefault(n.name, n)
    return found


def totals(graph: Graph) -> str:
    return f"{graph.spec.model.name}: {graph.n_params:,} parameters, {flops(graph.flops)}FLOPs per example"


def _init(l: LayerInfo) -> str:
    return "; ".join(f"{t} {d} ({rule})" for t, d, rule in l.init if rule != "fixed") or "no learned tensors"


def _params(info: LayerInfo | GroupInfo, graph: Graph | None = None) -> int:
    if isinstance(info, LayerInfo):
        return info.n_params
    return sum(l.n_params for l in graph.layers() if l.path.startswith(info.path + ".")) if graph else 0


def facts(info: LayerInfo | GroupInfo, graph: Graph | None = None) -> str:
    """A layer's resolved input and output, parameters, FLOPs and initialization."""
    if isinstance(info, GroupInfo):
        what = (f"residual block, {'1x1 projection' if info.proj else 'identity'} shortcut" if info.kind == "residual"
                else info.label)
        return f"`{info.path}`: {what}: {info.input} -> {info.output}, {_params(info, graph):,} parameters"
    return (f"`{info.path}` ({info.kind}): {info.input} -> **{info.output}**, {info.n_params:,} parameters, "
            f"{flops(info.flops)}FLOPs\n\ninit: {_init(info)}")


def _on_line(graph: Graph | None, line: int) -> list:
    """The layers (and blocks) a statement on 0-based `line` made: several for a repeat."""
    if graph is None:
        return []
    here = lambda n: n.span.line == line + 1 and n.span.doc is None  # (not a line of an included file)
    found = [l for l in graph.layers() if here(l) and not l.implicit and l.name not in ("proj", "proj_bn")]
    return found + [g for g in graph.groups if here(g)]


def _facts_text(infos: list, graph: Graph | None = None) -> list[str]:
    if len(infos) > 4:  # a repeat, a block used several times: the first and the last
        return [facts(infos[0], graph), f"... {len(infos) - 2} more ...", facts(infos[-1], graph)]
    return [facts(i, graph) for i in infos]


# ---------------------------------------------------------------- hover


def _call_model(cur: C.Cursor, name: str):
    """The parameter model of a call `name(...)` where the cursor is."""
    if name in W.CALLS:
        return W.CALLS[name]
    registry = W.SECTION_WORDS.get(cur.section or "", (None, ()))[0]
    if registry is not None and name in registry:
        return registry[name].params
    found = W.meanings(name)
    return found[0][1].params if found else None


def hover(text: str, line: int, column: int, good: Analysis | None) -> str | None:
    cur = C.at(text, line, column)
    tok = cur.at
    if tok is None or tok.kind != "WORD":
        return None
    word, i = tok.text, cur.index
    graph = good.graph if good else None
    head = cur.stmt[0].text if cur.stmt else None
    in_model = bool(cur.blocks) and cur.blocks[0] == "model"
    following = cur.stmt[i + 1].text if i + 1 < len(cur.stmt) else None
    if in_model and i == 0 and word in W.LAYERS:
        return "\n\n".join([W.describe("layer", W.LAYERS[word]), *_facts_text(_on_line(graph, line), graph)])
    if in_model and i == 1 and head in W.LAYERS and following != "(" and names_layer(head, word):
        return "\n\n".join([f"**{word}**: the name of this {head} layer", *_facts_text(_on_line(graph, line), graph)])
    if in_model and i > 0 and head in W.LAYERS and (p := W.option(W.LAYERS[head].params, word)):
        return f"**{word}**: option of {head}, `{p}`"
    if not cur.blocks and i == 1 and head == "model":
        return f"**{word}**: the model" + (f"\n\n{totals(graph)}" if graph else "")
    if following == "=" and cur.call and (model := _call_model(cur, cur.call)) and (p := W.option(model, word)):
        return f"**{word}**: option of {cur.call}, `{p}`"
    section = cur.section
    if not cur.blocks and i > 0 and section in ("train", "regularize", "data") and word in W.SECTION_WORDS[section][1]:
        p = next((p for m in (W.Train, W.Regularize, W.DataOptions) if (p := W.option(m, word))), None)
        return f"**{word}**: {section} setting" + (f", `{p}`" if p else "")
    if word in _names(graph) and not (i == 0 and word in W.LAYERS):
        return facts(_names(graph)[word], graph)
    return W.describe_word(word)


# ---------------------------------------------------------------- completion


@dataclass(frozen=True)
class Item:
    label: str
    kind: str  # keyword, layer, option, value, reference
    detail: str = ""
    insert: str | None = None  # the text to insert, when not the label


def _records(registry, kind: str = "value") -> list[Item]:
    return [Item(k, kind, r.doc) for k, r in registry.items()]


def _options(model, used: set[str], suffix: str = "") -> list[Item]:
    return [Item(p.name, "option", "required" if p.default is None else f"default {p.default}",
                 p.name + suffix if suffix else None) for p in W.params(model) if p.name not in used]


def _references(graph: Graph | None) -> list[Item]:
    return [Item(n, "reference", f"{i.kind} -> {i.output}") for n, i in _names(graph).items()]


def complete(text: str, line: int, column: int, good: Analysis | None) -> list[Item]:
    cur = C.at(text, line, column)
    graph = good.graph if good else None
    if cur.call is not None:
        return _in_call(cur, graph)
    if cur.blocks and cur.blocks[0] == "model":
        return _in_model(cur, graph)
    if not cur.blocks and cur.index == 0:
        return [Item(s, "keyword", W.SECTION_DOCS.get(s, "")) for s in W.SECTIONS] + \
            [Item("nnspec", "keyword", "the language version, first: nnspec 1")]
    return _in_section(cur, graph)


def _in_call(cur: C.Cursor, graph: Graph | None) -> list[Item]:
    if cur.call in ("lr_mult", "decay_mult"):
        return [] if cur.key else [Item(r.label, r.kind, r.detail, r.label + "=") for r in _references(graph)]
    if cur.key == "skip":
        return _references(graph)
    if cur.key:
        return []
    model = _call_model(cur, cur.call)
    if model is None:
        return []
    used = {t.text for k, t in enumerate(cur.stmt[:-1]) if cur.stmt[k + 1].text == "="}
    return _options(model, used, "=")


def _in_model(cur: C.Cursor, graph: Graph | None) -> list[Item]:
    entry = [t for t in cur.entry if t is not cur.at]
    if not entry:
        return _records(W.LAYERS, "layer") + [Item(k, "keyword", d) for k, d in W.STRUCTURE_DOCS.items()]
    head = entry[0].text
    if head == "from" or head in ("concat", "add") and any(t.text == "with" for t in entry):
        # a reference to an earlier value: the model's inputs, and its layers and blocks by name
        inputs = [Item(n, "reference", f"input {shape}") for n, shape in (graph.inputs if graph else ())]
        return inputs + _references(graph)
    if head == "input":
        return [Item(k, "value", f"{k}({', '.join(v)})", f"{k}(") for k, v in W.INPUTS.items()]
    if head == "residual":
        return [Item("project", "keyword", "a 1x1 conv + batchnorm shortcut, for a block that changes the shape")]
    if head in W.LAYERS:
        return _options(W.LAYERS[head].params, _used(head, cur.stmt))
    return []


def _used(kind: str, stmt: list[C.Tok]) -> set[str]:
    """The options a layer line gives already: by key, or by position (`conv 96` gives filters)."""
    keys = {p.name for p in W.params(W.LAYERS[kind].params)}
    used = {t.text for t in stmt[1:] if t.text in keys}
    bare = sum(1 for k, t in enumerate(stmt[1:], 1) if t.kind in ("NUMBER", "SIZE") and stmt[k - 1].text not in keys)
    return used | set(W.LAYERS[kind].positional[:bare])


def _in_section(cur: C.Cursor, graph: Graph | None) -> list[Item]:
    section = cur.section or ""
    entry = [t.text for t in cur.entry if t is not cur.at]
    registry, keys = W.SECTION_WORDS.get(section, (None, ()))
    if section == "init":
        return _init_items(entry, graph)
    if section == "data" and entry and entry[0] in ("preprocess", "augment"):
        return _records(dict(W.REGISTRIES)["preprocessing step" if entry[0] == "preprocess" else "augmentation"])
    if section == "train" and entry and entry[0] == "freeze":
        return _references(graph)
    if entry:
        return []
    items = [Item(k, "option", "") for k in keys if k not in W.CALLS] + \
        [Item(k, "option", "", k + "(") for k in keys if k in W.CALLS]
    return (_records(registry) if registry is not None else []) + items


def _init_items(entry: list[str], graph: Graph | None) -> list[Item]:
    names = _names(graph)
    if entry and entry[0] in names:
        entry = entry[1:]
        if not entry:
            return [Item("weights", "keyword"), Item("bias", "keyword")]
    if not entry:
        return [Item("weights", "keyword", "weights INIT"), Item("bias", "keyword", "bias INIT [before ACTIVATION]")] \
            + _references(graph)
    if len(entry) == 1 and entry[0] in ("weights", "bias"):
        return _records(dict(W.REGISTRIES)["initializer"])
    if len(entry) == 2:
        return [Item("before", "keyword", "only layers followed by this activation")]
    if len(entry) == 3 and entry[2] == "before":
        return [Item(k, "value", d.doc) for k, d in W.LAYERS.items() if d.activation]
    return []


# ---------------------------------------------------------------- definitions and the outline


def definition(text: str, line: int, column: int, good: Analysis | None) -> Span | None:
    """Where the layer (or block) named under the position is defined."""
    cur = C.at(text, line, column)
    if cur.at is None or cur.at.kind != "WORD" or (cur.index == 0 and cur.at.text in W.LAYERS):
        return None
    blocks = good.spec.blocks if good and good.spec else {}
    if cur.at.text in blocks:  # a block's word: its definition (perhaps in an included file: Span.doc)
        return blocks[cur.at.text].span
    info = _names(good.graph if good else None).get(cur.at.text)
    return info.span if info is not None else None


@dataclass
class Symbol:
    name: str
    kind: str  # model, layer, block, section
    detail: str
    line: int  # 0-based first and last line
    end_line: int
    children: list["Symbol"] = field(default_factory=list)


def outline(good: Analysis) -> list[Symbol]:
    """The model's layers (blocks holding theirs) and the sections, in the order written."""
    graph, rows = good.graph, good.text.split("\n")
    if graph is None:
        return []
    spec = graph.spec

    groups = {g.path: g for g in graph.groups}

    def line_of(n) -> int:  # where the model block writes it: a layer inside a block's definition, at the use
        return (n.trace[0].span if n.trace else n.span).line - 1

    def nodes(prefix: str) -> list[Symbol]:
        """The layers and groups directly under the group at `prefix` (the model at ""), in
        execution order: a group where its first layer runs."""
        out, seen = [], set()
        depth = prefix.count(".") + 1 if prefix else 0
        for l in graph.layers():
            if l.implicit or l.merge or prefix and not l.path.startswith(prefix + "."):
                continue
            parts = l.path.split(".")
            here = ".".join(parts[:depth + 1])
            if here in seen:
                continue
            seen.add(here)
            if here in groups:
                g = groups[here]
                line = line_of(g)
                detail = f"{'residual' if g.kind == 'residual' else g.label} -> {g.output}"
                end = C.block_end(rows, line) if g.kind != "block" or g.trace else line
                out.append(Symbol(g.name, "block", detail, line, max(end, line), nodes(here)))
            elif here == l.path:
                line = line_of(l)
                out.append(Symbol(l.name, "layer", f"{l.kind} -> {l.output}, {l.n_params:,} params", line,
                                  line + (l.span.end_line - l.span.line if not l.trace else 0)))
        return out

    first = spec.spans["model"].line - 1
    model = Symbol(spec.model.name, "model", totals(graph).split(": ", 1)[1], first, C.block_end(rows, first),
                   nodes(""))
    sections = [Symbol(s, "section", "", sp.line - 1, sp.end_line - 1) for s, sp in spec.spans.items()
                if s in W.SECTIONS and s != "model" and sp.line > 0]
    return sorted([model, *sections], key=lambda s: s.line)


def size_lens(good: Analysis) -> tuple[int, str] | None:
    """(0-based line of the model, its parameters and FLOPs)."""
    if good.graph is None:
        return None
    return good.graph.spec.spans["model"].line - 1, totals(good.graph).split(": ", 1)[1]
