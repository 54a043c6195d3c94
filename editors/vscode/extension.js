// The nnspec extension: the TextMate grammar and language configuration are declared in
// package.json; this file starts the nnc language server (`nnc lsp`, LSP over stdio) for
// .nnspec files and restarts it when its command setting changes.

"use strict";

const vscode = require("vscode");
const { LanguageClient } = require("vscode-languageclient/node");

const SETTING = "nnspec.server.command";
const DEFAULT_COMMAND = ["nnc", "lsp"];

let client = null;

function serverCommand() {
  const value = vscode.workspace.getConfiguration("nnspec").get("server.command", DEFAULT_COMMAND);
  if (!Array.isArray(value) || value.length === 0 || !value.every((s) => typeof s === "string" && s !== "")) {
    vscode.window.showErrorMessage(
      `${SETTING} must be a non-empty array of strings, program first, e.g. ["nnc", "lsp"]; using ["nnc", "lsp"].`,
    );
    return DEFAULT_COMMAND;
  }
  return value;
}

async function startClient() {
  const [command, ...args] = serverCommand();
  // No `transport` on purpose: with TransportKind.stdio vscode-languageclient appends `--stdio`
  // to the arguments; left out, it still talks over the process's stdin/stdout and runs the
  // command exactly as configured.
  const serverOptions = { command, args };
  const clientOptions = {
    documentSelector: [
      { scheme: "file", language: "nnspec" },
      { scheme: "untitled", language: "nnspec" },
    ],
  };
  // The id "nnspec" makes the client read the `nnspec.trace.server` setting.
  const next = new LanguageClient("nnspec", "nnspec language server", serverOptions, clientOptions);
  client = next;
  try {
    await next.start();
  } catch (err) {
    if (client === next) client = null;
    const message = err && err.message ? err.message : String(err);
    vscode.window.showErrorMessage(
      `Could not start the nnspec language server (${[command, ...args].join(" ")}): ${message}. ` +
        `Install nnc (pip install -e . in the nnc repository) or set ${SETTING}.`,
    );
  }
}

async function stopClient() {
  const current = client;
  client = null;
  if (current) {
    try {
      await current.stop();
    } catch {
      // The server had already exited.
    }
  }
}

async function restartClient() {
  await stopClient();
  await startClient();
}

async function activate(context) {
  context.subscriptions.push(
    vscode.commands.registerCommand("nnspec.restartServer", restartClient),
    vscode.workspace.onDidChangeConfiguration((event) => {
      if (event.affectsConfiguration(SETTING)) restartClient();
    }),
  );
  await startClient();
}

function deactivate() {
  return stopClient();
}

module.exports = { activate, deactivate };
