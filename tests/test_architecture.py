"""The shape of the code (docs/architecture.md): imports go one way, and no function outgrows a screen.

The layers, from the top: the commands (nnc/commands, nnc/cli.py, the `nnc` package's API),
runtime/, compiler/, grammar/, and the leaf modules nnc/diagnostics.py, nnc/files.py,
nnc/version.py. A module may import its own layer or any layer below it. Every import counts,
those inside functions too: a lazy import against the direction is still a backwards arrow.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"nnc": "nnc", "grammar": "nnc.grammar", "compiler": "nnc.compiler", "runtime": "nnc.runtime"}
LEAVES = {"nnc.diagnostics", "nnc.files", "nnc.version"}
RANK = {"leaf": 0, "grammar": 1, "compiler": 2, "runtime": 3, "commands": 4}


def layer(module: str) -> str:
    if module in LEAVES:
        return "leaf"
    for name in ("grammar", "compiler", "runtime"):
        if module == f"nnc.{name}" or module.startswith(f"nnc.{name}."):
            return name
    return "commands"  # nnc, nnc.cli, nnc.commands.*


def modules():
    for folder, package in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            yield ".".join([package, *parts]), path, path.name == "__init__.py"


def imports(module: str, path: Path, is_package: bool, source: str | None = None):
    """(imported nnc module, line) for every import in the file, relative ones resolved."""
    tree = ast.parse(source if source is not None else path.read_text())
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name == "nnc" or a.name.startswith("nnc."):
                    yield a.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(up + ([base] if base else []))
            if base == "nnc" or base.startswith("nnc."):
                for a in node.names:  # `from nnc.runtime import checkpoint` imports nnc.runtime.checkpoint
                    yield (f"{base}.{a.name}" if base in FOLDERS.values() else base), node.lineno


def backwards(module: str, path: Path, is_package: bool, source: str | None = None) -> list[str]:
    here = layer(module)
    return [f"{path.relative_to(ROOT) if path.is_absolute() else path}:{line}: {module} ({here}) imports {target} "
            f"({layer(target)})"
            for target, line in imports(module, path, is_package, source) if RANK[layer(target)] > RANK[here]]


def test_imports_go_one_way():
    found = [b for m, p, pkg in modules() for b in backwards(m, p, pkg)]
    assert not found, "\n".join(found)


@pytest.mark.parametrize("module,source", [
    ("nnc.compiler.checks", "def f():\n    from nnc.runtime.train import train\n"),  # lazy, still backwards
    ("nnc.grammar.parse", "from nnc.compiler.spec import Spec\n"),
    ("nnc.diagnostics", "import nnc.compiler.load\n"),
    ("nnc.compiler.vocab.losses", "from ...runtime import checkpoint\n"),  # relative
    ("nnc.runtime.train", "from nnc import build_model\n"),  # the API is at the top
])
def test_a_backwards_import_is_caught(module, source):
    """The check above is not vacuous: each of these would be reported."""
    assert backwards(module, Path(module.replace(".", "/") + ".py"), False, source)


def test_the_allowed_direction_passes():
    assert not backwards("nnc.runtime.train", Path("runtime/train.py"), False,
                         "from nnc.compiler.graph import Graph\nfrom nnc.diagnostics import NncError\n"
                         "from nnc.runtime import checkpoint\nfrom . import state\n")


def test_no_function_over_100_lines():
    """Functions fit on a screen (tests aside); a longer one is a sign it does several jobs."""
    long = []
    for _, path, _ in modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 100:
                long.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.name} ({node.end_lineno - node.lineno + 1} lines)")
    assert not long, "\n".join(long)
