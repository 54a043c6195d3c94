"""Who imports a module, and when: runs a command in this process with an import hook that
prints the Python stack at the first import of each named module (and the time since start).

    python bench/import_trace.py torch._dynamo sklearn matplotlib -- -m nnc.cli train specs/digits_cnn.nnspec --out /tmp/r -q
    python bench/import_trace.py torch._dynamo -- bench/handwritten_digits.py --spec cnn --epochs 1

After `--`: a script path and its arguments, or `-m module` and its arguments (as `python` takes
them). The stack is cut to the frames outside importlib; `--frames N` keeps the last N.
"""

from __future__ import annotations

import argparse
import importlib.abc
import runpy
import sys
import time
import traceback

T0 = time.perf_counter()


class Tracer(importlib.abc.MetaPathFinder):
    def __init__(self, names: set[str], frames: int):
        self.names, self.frames, self.seen = names, frames, set()

    def find_spec(self, fullname, path, target=None):
        if fullname in self.names and fullname not in self.seen and fullname not in sys.modules:
            self.seen.add(fullname)
            stack = [f for f in traceback.extract_stack()[:-1] if "importlib" not in f.filename
                     and not f.filename.endswith("import_trace.py") and "<frozen" not in f.filename]
            print(f"\n=== first import of {fullname} at {1e3 * (time.perf_counter() - T0):.0f} ms since start; stack "
                  f"(last {self.frames} frames):", file=sys.stderr)
            print("".join(traceback.format_list(stack[-self.frames:])), file=sys.stderr, end="")
        return None  # the normal finders do the import


def main() -> None:
    argv = sys.argv[1:]
    if "--" not in argv:
        sys.exit(__doc__)
    cut = argv.index("--")
    ap = argparse.ArgumentParser()
    ap.add_argument("modules", nargs="+")
    ap.add_argument("--frames", type=int, default=14)
    a = ap.parse_args(argv[:cut])
    cmd = argv[cut + 1:]
    sys.meta_path.insert(0, Tracer(set(a.modules), a.frames))
    if cmd[0] == "-m":
        sys.argv = [cmd[1], *cmd[2:]]
        runpy.run_module(cmd[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = cmd
        sys.path.insert(0, str(__import__("pathlib").Path(cmd[0]).resolve().parent))
        runpy.run_path(cmd[0], run_name="__main__")


if __name__ == "__main__":
    main()
