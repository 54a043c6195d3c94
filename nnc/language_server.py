"""`nnc lsp`: the language server, on pygls (JSON-RPC and the LSP types are theirs). Each open
document is analyzed as `nnc check` reads it on every change; the answers come from
compiler/assist.py, from the last version that checked where the current one does not (the
outline and hover stay useful while a line is half typed). Never imports torch."""

from __future__ import annotations

from lsprotocol import types as T
from pygls.lsp.server import LanguageServer
from pygls.uris import to_fs_path
from pygls.workspace.position_codec import ServerTextPosition, ServerTextRange

from nnc.compiler import assist
from nnc.diagnostics import Diagnostic, NncError, Span
from nnc.version import __version__

SEVERITY = {"error": T.DiagnosticSeverity.Error, "warning": T.DiagnosticSeverity.Warning}
KINDS = {"keyword": T.CompletionItemKind.Keyword, "layer": T.CompletionItemKind.Class,
         "option": T.CompletionItemKind.Property, "value": T.CompletionItemKind.Value,
         "reference": T.CompletionItemKind.Reference}
SYMBOLS = {"model": T.SymbolKind.Class, "layer": T.SymbolKind.Field, "block": T.SymbolKind.Namespace,
           "section": T.SymbolKind.Property}


class NncServer(LanguageServer):
    def __init__(self):
        super().__init__("nnc", __version__, text_document_sync_kind=T.TextDocumentSyncKind.Incremental)
        self.latest: dict[str, assist.Analysis] = {}  # uri -> the current text's analysis
        self.good: dict[str, assist.Analysis] = {}  # uri -> the last analysis that checked

    def refresh(self, uri: str) -> None:
        doc = self.workspace.get_text_document(uri)
        a = assist.analyze(doc.source, to_fs_path(uri) or uri)
        self.latest[uri] = a
        if a.graph is not None:
            self.good[uri] = a
        self.text_document_publish_diagnostics(T.PublishDiagnosticsParams(
            uri, [_diagnostic(doc, uri, d) for d in a.diagnostics], version=doc.version))

    def answers_from(self, uri: str) -> assist.Analysis | None:
        """The analysis to answer from: the current one when it checked, else the last that did."""
        return self.good.get(uri)


def _range(doc, span: Span | None) -> T.Range:
    """nnc's 1-based, end-exclusive span (in characters) as an LSP range in the client's units."""
    if span is None or span.line <= 0 or span.origin:
        return T.Range(T.Position(0, 0), T.Position(0, 0))
    rows = len(doc.lines)
    start = ServerTextPosition(min(span.line, rows + 1) - 1, span.column - 1)
    end = ServerTextPosition(min(span.end_line, rows + 1) - 1, span.end_column - 1)
    return doc.range_to_client_units(ServerTextRange(start, end)) if span.line <= rows else T.Range(
        T.Position(start.line, start.character), T.Position(end.line, end.character))


def _diagnostic(doc, uri: str, d: Diagnostic) -> T.Diagnostic:
    message = d.message + (f"\nhelp: {d.help}" if d.help else "")
    related = [T.DiagnosticRelatedInformation(T.Location(uri, _range(doc, s)), m) for s, m in d.related]
    return T.Diagnostic(_range(doc, d.span), message, severity=SEVERITY[d.severity], source="nnc",
                        related_information=related or None, data={"fix": d.fix} if d.fix else None)


def _position(doc, pos: T.Position) -> tuple[int, int]:
    p = doc.position_from_client_units(pos)
    return p.line, p.character


server = NncServer()


@server.feature(T.TEXT_DOCUMENT_DID_OPEN)
def did_open(ls: NncServer, params: T.DidOpenTextDocumentParams) -> None:
    ls.refresh(params.text_document.uri)


@server.feature(T.TEXT_DOCUMENT_DID_CHANGE)
def did_change(ls: NncServer, params: T.DidChangeTextDocumentParams) -> None:
    ls.refresh(params.text_document.uri)


@server.feature(T.TEXT_DOCUMENT_DID_CLOSE)
def did_close(ls: NncServer, params: T.DidCloseTextDocumentParams) -> None:
    uri = params.text_document.uri
    ls.latest.pop(uri, None)
    ls.good.pop(uri, None)
    ls.text_document_publish_diagnostics(T.PublishDiagnosticsParams(uri, []))


@server.feature(T.TEXT_DOCUMENT_HOVER)
def hover(ls: NncServer, params: T.HoverParams) -> T.Hover | None:
    doc = ls.workspace.get_text_document(params.text_document.uri)
    text = assist.hover(doc.source, *_position(doc, params.position), ls.answers_from(doc.uri))
    return T.Hover(T.MarkupContent(T.MarkupKind.Markdown, text)) if text else None


@server.feature(T.TEXT_DOCUMENT_COMPLETION, T.CompletionOptions(trigger_characters=[" ", "(", ","]))
def completion(ls: NncServer, params: T.CompletionParams) -> T.CompletionList:
    doc = ls.workspace.get_text_document(params.text_document.uri)
    items = assist.complete(doc.source, *_position(doc, params.position), ls.answers_from(doc.uri))
    return T.CompletionList(False, [T.CompletionItem(i.label, kind=KINDS[i.kind], detail=i.detail or None,
                                                     insert_text=i.insert) for i in items])


@server.feature(T.TEXT_DOCUMENT_DEFINITION)
def definition(ls: NncServer, params: T.DefinitionParams) -> T.Location | None:
    doc = ls.workspace.get_text_document(params.text_document.uri)
    span = assist.definition(doc.source, *_position(doc, params.position), ls.answers_from(doc.uri))
    return T.Location(doc.uri, _range(doc, span)) if span else None


def _symbol(doc, s: assist.Symbol) -> T.DocumentSymbol:
    end = len(doc.lines[s.end_line]) if s.end_line < len(doc.lines) else 0
    whole = T.Range(T.Position(s.line, 0), T.Position(s.end_line, end))
    return T.DocumentSymbol(s.name, SYMBOLS[s.kind], whole, whole, detail=s.detail or None,
                            children=[_symbol(doc, c) for c in s.children] or None)


@server.feature(T.TEXT_DOCUMENT_DOCUMENT_SYMBOL)
def symbols(ls: NncServer, params: T.DocumentSymbolParams) -> list[T.DocumentSymbol]:
    doc = ls.workspace.get_text_document(params.text_document.uri)
    good = ls.answers_from(doc.uri)
    return [_symbol(doc, s) for s in assist.outline(good)] if good else []


@server.feature(T.TEXT_DOCUMENT_FORMATTING)
def formatting(ls: NncServer, params: T.DocumentFormattingParams) -> list[T.TextEdit] | None:
    from nnc.compiler.format import format_text

    doc = ls.workspace.get_text_document(params.text_document.uri)
    try:
        new = format_text(doc.source, to_fs_path(doc.uri) or doc.uri)
    except NncError:  # a spec with errors is left as it is (its diagnostics are shown already)
        return None
    if new == doc.source:
        return []
    return [T.TextEdit(T.Range(T.Position(0, 0), T.Position(len(doc.lines), 0)), new)]


@server.feature(T.TEXT_DOCUMENT_CODE_ACTION, T.CodeActionOptions(code_action_kinds=[T.CodeActionKind.QuickFix]))
def code_actions(ls: NncServer, params: T.CodeActionParams) -> list[T.CodeAction]:
    out = []
    for d in params.context.diagnostics:
        fix = (d.data or {}).get("fix") if isinstance(d.data, dict) else None
        if fix:
            edit = T.WorkspaceEdit(changes={params.text_document.uri: [T.TextEdit(d.range, fix)]})
            out.append(T.CodeAction(f"Replace with '{fix}'", kind=T.CodeActionKind.QuickFix, diagnostics=[d],
                                    edit=edit, is_preferred=True))
    return out


@server.feature(T.TEXT_DOCUMENT_CODE_LENS)
def code_lens(ls: NncServer, params: T.CodeLensParams) -> list[T.CodeLens]:
    good = ls.answers_from(params.text_document.uri)
    lens = assist.size_lens(good) if good else None
    if lens is None:
        return []
    line, title = lens
    return [T.CodeLens(T.Range(T.Position(line, 0), T.Position(line, 0)), T.Command(title, ""))]


def serve() -> None:
    server.start_io()
