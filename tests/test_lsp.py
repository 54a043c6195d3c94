"""`nnc lsp` with a real LSP client (pygls's) over the server's standard input and output: the
server runs as editors start it, in its own process, with torch made unimportable there."""

import asyncio
import sys

from conftest import ROOT, SPECS
from lsprotocol import types as T
from pygls.lsp.client import LanguageClient

# The server process: `nnc lsp`, where importing torch raises (every answer below would fail).
SERVER = """
import sys
class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("the language server must not import torch")
sys.meta_path.insert(0, NoTorch())
from nnc.cli import main
sys.exit(main(["lsp"]))
"""

BROKEN = """nnspec 1

model Tiny {
    input vector(64)

    dense fc1 128
    relu
    dense fc2 10 kernal 3
}

los cross_entropy
"""
FIXED = BROKEN.replace(" kernal 3", "").replace("los ", "loss ")


class Session:
    """A client talking to one server process, collecting the diagnostics it publishes."""

    def __init__(self):
        self.client = LanguageClient("nnc-test", "1")
        self.diagnostics: asyncio.Queue = asyncio.Queue()

        @self.client.feature(T.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
        def published(params):
            self.diagnostics.put_nowait(params)

    async def start(self):
        await self.client.start_io(sys.executable, "-c", SERVER, cwd=str(ROOT))
        await self.client.initialize_async(T.InitializeParams(capabilities=T.ClientCapabilities(), process_id=None,
                                                              root_uri=None))
        self.client.initialized(T.InitializedParams())

    async def stop(self):
        await self.client.shutdown_async(None)
        self.client.exit(None)
        await self.client.stop()

    def open(self, uri: str, text: str, version: int = 1):
        self.client.text_document_did_open(T.DidOpenTextDocumentParams(T.TextDocumentItem(uri, "nnspec", version, text)))

    def replace(self, uri: str, text: str, version: int):
        change = T.TextDocumentContentChangeWholeDocument(text)
        self.client.text_document_did_change(T.DidChangeTextDocumentParams(
            T.VersionedTextDocumentIdentifier(version, uri), [change]))

    async def published(self, version: int) -> list[T.Diagnostic]:
        while True:
            p = await asyncio.wait_for(self.diagnostics.get(), 30)
            if p.version == version:
                return list(p.diagnostics)

    def doc(self, uri: str, line: int, character: int):
        return dict(text_document=T.TextDocumentIdentifier(uri), position=T.Position(line, character))


def run(coro_fn):
    async def main():
        s = Session()
        await s.start()
        try:
            return await coro_fn(s)
        finally:
            await s.stop()
    return asyncio.run(main())


def test_diagnostics_as_you_type_hover_and_completion(tmp_path):
    uri = (tmp_path / "tiny.nnspec").as_uri()

    async def session(s: Session):
        s.open(uri, BROKEN)
        diags = sorted(await s.published(1), key=lambda d: d.range.start.line)
        assert [d.severity for d in diags] == [T.DiagnosticSeverity.Error] * 2
        option, section = diags
        # the offending token, start and end: `kernal` on line 8 (0-based 7), columns 17-23
        assert (option.range.start, option.range.end) == (T.Position(7, 17), T.Position(7, 23))
        assert "unknown dense option 'kernal'" in option.message
        assert (section.range.start, section.range.end) == (T.Position(10, 0), T.Position(10, 3))
        assert section.data == {"fix": "loss"}  # the did-you-mean, as a quick fix
        actions = await s.client.text_document_code_action_async(T.CodeActionParams(
            T.TextDocumentIdentifier(uri), section.range, T.CodeActionContext([section])))
        assert [a.title for a in actions] == ["Replace with 'loss'"]
        assert actions[0].edit.changes[uri][0].new_text == "loss"

        s.replace(uri, FIXED, 2)
        assert await s.published(2) == []

        hover = await s.client.text_document_hover_async(T.HoverParams(**s.doc(uri, 5, 5)))  # `dense` of fc1
        text = hover.contents.value
        assert "fully connected" in text and "units (required)" in text and "bias = true" in text
        assert "vector(64) -> **vector(128)**, 8,320 parameters" in text and "init: weight" in text
        hover = await s.client.text_document_hover_async(T.HoverParams(**s.doc(uri, 2, 8)))  # the model's name
        assert "Tiny: 9,610 parameters" in hover.contents.value

        items = await s.client.text_document_completion_async(T.CompletionParams(**s.doc(uri, 6, 4)))  # a layer line
        labels = {i.label for i in items.items}
        assert {"conv", "dense", "lstm", "relu", "repeat", "residual"} <= labels and "loss" not in labels
        items = await s.client.text_document_completion_async(T.CompletionParams(**s.doc(uri, 5, 18)))  # after `dense fc1 128 `
        assert {(i.label, i.detail) for i in items.items} == {("bias", "default true")}
        return True

    assert run(session)


def test_completion_of_sections_arguments_and_references(tmp_path):
    uri = (tmp_path / "digits.nnspec").as_uri()
    text = (SPECS / "digits_cnn.nnspec").read_text()
    rows = text.split("\n")
    init = rows.index(next(r for r in rows if r.startswith("init")))
    opt = rows.index(next(r for r in rows if r.startswith("optimizer")))

    async def session(s: Session):
        s.open(uri, text)
        assert await s.published(1) == []
        at_start = await s.client.text_document_completion_async(T.CompletionParams(**s.doc(uri, opt, 0)))
        assert {"model", "init", "loss", "optimizer", "train"} <= {i.label for i in at_start.items}
        call = rows[opt].index("(") + 1  # inside adam(
        kwargs = await s.client.text_document_completion_async(T.CompletionParams(**s.doc(uri, opt, call)))
        assert ("beta1", "default 0.9", "beta1=") in {(i.label, i.detail, i.insert_text) for i in kwargs.items}
        refs = await s.client.text_document_completion_async(T.CompletionParams(**s.doc(uri, init, len("init       "))))
        assert {"weights", "bias", "conv1", "conv2", "fc1", "fc2"} <= {i.label for i in refs.items}
        return True

    assert run(session)


def test_definition_outline_formatting_and_lens(tmp_path):
    uri = (tmp_path / "vgg.nnspec").as_uri()
    text = (SPECS / "vgg16.nnspec").read_text()
    rows = text.split("\n")
    init = next(i for i, r in enumerate(rows) if r.startswith("init"))
    fc8_def = next(i for i, r in enumerate(rows) if r.strip().startswith("dense fc8"))

    async def session(s: Session):
        s.open(uri, text)
        assert await s.published(1) == []
        where = await s.client.text_document_definition_async(T.DefinitionParams(
            **s.doc(uri, init, rows[init].index("fc8") + 1)))
        assert where.range.start == T.Position(fc8_def, 4)
        outline = await s.client.text_document_document_symbol_async(T.DocumentSymbolParams(T.TextDocumentIdentifier(uri)))
        model = outline[0]
        assert model.name == "VGG16" and "138,357,544 parameters" in model.detail
        assert [c.name for c in model.children][:4] == ["conv1", "relu1", "conv2", "relu2"]
        assert all(model.range.start.line < c.range.start.line <= c.range.end.line < model.range.end.line
                   for c in model.children)
        assert model.children[-1].name == "fc8" and [o.name for o in outline[1:]][:2] == ["init", "loss"]
        lens = await s.client.text_document_code_lens_async(T.CodeLensParams(T.TextDocumentIdentifier(uri)))
        assert lens[0].command.title.startswith("138,357,544 parameters, 30.9")
        edits = await s.client.text_document_formatting_async(T.DocumentFormattingParams(
            T.TextDocumentIdentifier(uri), T.FormattingOptions(4, True)))
        assert list(edits) == []  # the shipped spec is in the canonical layout
        s.replace(uri, text.replace("dense fc6 4096", "dense   fc6    4096"), 2)
        await s.published(2)
        edits = await s.client.text_document_formatting_async(T.DocumentFormattingParams(
            T.TextDocumentIdentifier(uri), T.FormattingOptions(4, True)))
        assert edits[0].new_text == text
        return True

    assert run(session)


def test_answers_within_100_ms_on_alexnet():
    """bench/lsp_latency.py's round trips once started: each kind of request's median under 100 ms."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("nnc_bench_lsp", ROOT / "bench" / "lsp_latency.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    result = asyncio.run(bench.measure(SPECS / "alexnet.nnspec", 8))
    slow = {k: v for k, v in result.items() if isinstance(v, dict) and v["median_ms"] >= 100}
    assert not slow, slow


def test_check_json_for_other_tools(tmp_path):
    """`nnc check --json`: every diagnostic with its file, 1-based range, severity, message, help
    and fix, and each spec's result."""
    import json

    from conftest import run_nnc

    broken = tmp_path / "broken.nnspec"
    broken.write_text(BROKEN)
    r = run_nnc("check", "--json", broken, SPECS / "alexnet.nnspec")
    assert r.returncode == 1
    report = json.loads(r.stdout)
    assert report["ok"] is False
    assert [(s["file"], s["ok"]) for s in report["specs"]] == [(str(broken), False),
                                                               (str(SPECS / "alexnet.nnspec"), True)]
    first, second = report["diagnostics"]
    assert first == {"file": str(broken), "range": {"start": {"line": 8, "column": 18}, "end": {"line": 8, "column": 24}},
                     "origin": None, "severity": "error", "message": "unknown dense option 'kernal'",
                     "help": "expected one of: bias, units", "fix": None, "related": []}
    assert (second["message"], second["help"], second["fix"]) == ("unknown section 'los'", "did you mean 'loss'?", "loss")
    ok = run_nnc("check", "--json", SPECS / "alexnet.nnspec")
    assert ok.returncode == 0 and json.loads(ok.stdout)["specs"][0]["params"] == 62_378_344


def test_completion_of_references_in_merges_and_from():
    """Where a line names an earlier value (`concat with A B`, `add with A`, `from A`), completion
    offers the model's inputs and its layers and blocks, with their shapes."""
    from nnc.compiler import assist

    text = (SPECS / "unet.nnspec").read_text()
    good = assist.analyze(text, "unet.nnspec")
    lines = text.splitlines()
    i = next(k for k, l in enumerate(lines) if l.strip().startswith("concat"))
    for written in (lines[i][:lines[i].index("with") + 5], "    from ", "    add with enc1 "):
        edited = "\n".join([*lines[:i], written, *lines[i + 1:]])
        items = {it.label: it.detail for it in assist.complete(edited, i, len(written), good)}
        assert items["input"] == "input image(1, 16, 16)" and "enc2" in items and "enc1.conv1" in items, written
    assert "enc2" not in {it.label for it in assist.complete(text, i, len("    "), good)}  # a line's start: words
