"""How fast `nnc lsp` answers once started: a real client (pygls's) over standard input and output,
on a spec of AlexNet's size. Times each kind of request N times, round trip, and prints the
median and the worst in milliseconds (the issue's bound: 100 ms).

    python bench/lsp_latency.py [SPEC] [-n 50] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

from lsprotocol import types as T
from pygls.lsp.client import LanguageClient

ROOT = Path(__file__).resolve().parents[1]


async def measure(spec: Path, n: int) -> dict:
    client = LanguageClient("nnc-bench", "1")
    published: asyncio.Queue = asyncio.Queue()
    client.feature(T.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)(lambda p: published.put_nowait(p))
    t0 = time.perf_counter()
    await client.start_io(sys.executable, "-m", "nnc.cli", "lsp", cwd=str(ROOT))
    await client.initialize_async(T.InitializeParams(capabilities=T.ClientCapabilities()))
    client.initialized(T.InitializedParams())
    text = spec.read_text()
    uri = spec.resolve().as_uri()
    client.text_document_did_open(T.DidOpenTextDocumentParams(T.TextDocumentItem(uri, "nnspec", 1, text)))
    await published.get()
    start = time.perf_counter() - t0
    rows = text.split("\n")
    layer = next(i for i, r in enumerate(rows) if r.strip().startswith("conv"))
    doc = T.TextDocumentIdentifier(uri)
    at = T.Position(layer, len(rows[layer]) - len(rows[layer].lstrip()) + 1)
    times: dict[str, list[float]] = {k: [] for k in ("change -> diagnostics", "hover", "completion", "symbols", "formatting")}
    for i in range(n):
        edited = text if i % 2 else text.replace("dropout 0.5", "dropout 0.4", 1)
        t = time.perf_counter()
        client.text_document_did_change(T.DidChangeTextDocumentParams(
            T.VersionedTextDocumentIdentifier(i + 2, uri), [T.TextDocumentContentChangeWholeDocument(edited)]))
        while (await published.get()).version != i + 2:
            pass
        times["change -> diagnostics"].append(time.perf_counter() - t)
        for kind, call in (("hover", lambda: client.text_document_hover_async(T.HoverParams(doc, at))),
                           ("completion", lambda: client.text_document_completion_async(T.CompletionParams(doc, at))),
                           ("symbols", lambda: client.text_document_document_symbol_async(T.DocumentSymbolParams(doc))),
                           ("formatting", lambda: client.text_document_formatting_async(
                               T.DocumentFormattingParams(doc, T.FormattingOptions(4, True))))):
            t = time.perf_counter()
            await call()
            times[kind].append(time.perf_counter() - t)
    await client.shutdown_async(None)
    client.exit(None)
    await client.stop()
    return {"spec": str(spec), "start_s": start,
            **{k: {"median_ms": 1000 * statistics.median(v), "max_ms": 1000 * max(v)} for k, v in times.items()}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("spec", nargs="?", default=str(ROOT / "specs" / "alexnet.nnspec"))
    p.add_argument("-n", type=int, default=50)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    result = asyncio.run(measure(Path(args.spec), args.n))
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{result['spec']}: started and first diagnostics in {result['start_s']:.2f} s")
    for k, v in result.items():
        if isinstance(v, dict):
            print(f"  {k:<22} median {v['median_ms']:6.1f} ms   worst {v['max_ms']:6.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
