#!/usr/bin/env node
// Tokenize .nnspec files with the extension's TextMate grammar, using the same engine as
// VS Code (vscode-textmate + the Oniguruma WebAssembly build, vscode-oniguruma), and print
// the tokens as JSON:
//
//   node test/tokenize.js [--grammar PATH] [--pretty] FILE...
//
//   [{"file": FILE, "lines": [[{"start": 0, "text": "model", "scopes": ["source.nnspec", ...]}, ...], ...]}, ...]
//
// One element per file, in the order given; one array of tokens per line (lines split on
// \n, a trailing \r dropped, as an editor shows them; an empty line has no tokens);
// `start` is the token's column (0-based, UTF-16 code units like `text`); `scopes` run from
// the outermost (source.nnspec) to the innermost. FILE `-` reads standard input. Errors go
// to stderr with exit status 1.
// tests/test_editor_grammar.py runs this once for all the files it checks.

"use strict";

const fs = require("fs");
const path = require("path");
const vsctm = require("vscode-textmate");
const oniguruma = require("vscode-oniguruma");

const HERE = __dirname;
const DEFAULT_GRAMMAR = path.join(HERE, "..", "syntaxes", "nnspec.tmLanguage.json");
const SCOPE = "source.nnspec";

function usage(message) {
  process.stderr.write(`${message}\nusage: node test/tokenize.js [--grammar PATH] [--pretty] FILE...\n`);
  process.exit(1);
}

function parseArgs(argv) {
  const opts = { grammar: DEFAULT_GRAMMAR, pretty: false, files: [] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--grammar") {
      if (i + 1 >= argv.length) usage("--grammar needs a path");
      opts.grammar = argv[++i];
    } else if (a === "--pretty") {
      opts.pretty = true;
    } else if (a === "--") {
      opts.files.push(...argv.slice(i + 1));
      break;
    } else if (a.startsWith("--")) {
      usage(`unknown option ${a}`);
    } else {
      opts.files.push(a);
    }
  }
  if (opts.files.length === 0) usage("no files given");
  return opts;
}

async function loadGrammar(grammarPath) {
  const wasm = fs.readFileSync(require.resolve("vscode-oniguruma/release/onig.wasm"));
  await oniguruma.loadWASM(wasm.buffer.slice(wasm.byteOffset, wasm.byteOffset + wasm.byteLength));
  const registry = new vsctm.Registry({
    onigLib: Promise.resolve({
      createOnigScanner: (patterns) => new oniguruma.OnigScanner(patterns),
      createOnigString: (s) => new oniguruma.OnigString(s),
    }),
    loadGrammar: async (scopeName) => {
      if (scopeName !== SCOPE) return null;
      const text = fs.readFileSync(grammarPath, "utf8");
      return vsctm.parseRawGrammar(text, path.resolve(grammarPath));
    },
  });
  const grammar = await registry.loadGrammar(SCOPE);
  if (!grammar) throw new Error(`could not load ${SCOPE} from ${grammarPath}`);
  return grammar;
}

function tokenizeText(grammar, text) {
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1); // a UTF-8 byte-order mark
  const lines = text.split("\n");
  if (lines.length > 1 && lines[lines.length - 1] === "") lines.pop(); // the final newline
  let stack = vsctm.INITIAL;
  const out = [];
  for (let raw of lines) {
    const line = raw.endsWith("\r") ? raw.slice(0, -1) : raw;
    const result = grammar.tokenizeLine(line, stack, 1000);
    if (result.stoppedEarly) throw new Error(`tokenizing stopped early on line ${out.length + 1}`);
    out.push(
      result.tokens
        .filter((t) => t.startIndex < line.length) // not the newline the tokenizer appends
        .map((t) => ({
          start: t.startIndex,
          text: line.slice(t.startIndex, Math.min(t.endIndex, line.length)),
          scopes: t.scopes,
        })),
    );
    stack = result.ruleStack;
  }
  return out;
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const grammar = await loadGrammar(opts.grammar);
  const result = opts.files.map((file) => {
    const text = file === "-" ? fs.readFileSync(0, "utf8") : fs.readFileSync(file, "utf8");
    return { file, lines: tokenizeText(grammar, text) };
  });
  process.stdout.write(JSON.stringify(result, null, opts.pretty ? 1 : undefined) + "\n");
}

main().catch((err) => {
  process.stderr.write(`tokenize.js: ${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
});
