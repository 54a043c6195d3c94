"""The CLI's fast path and its AlexNet listing.

`nnc check` and `nnc show` never import torch (docs/architecture.md: they answer in well under a second), and
`nnc show specs/alexnet.nnspec` prints the CS231n lecture's AlexNet listing line for line.
"""

import json
import subprocess
import sys

from conftest import ROOT, SPECS, run_nnc

ALEXNET = SPECS / "alexnet.nnspec"

# The lecture's listing of the (simplified, 227x227) AlexNet, in order.
LECTURE = [
    "[227x227x3] INPUT",
    "[55x55x96] CONV1: 96 11x11 filters at stride 4, pad 0",
    "[27x27x96] MAX POOL1: 3x3 filters at stride 2",
    "[27x27x96] NORM1: Normalization layer",
    "[27x27x256] CONV2: 256 5x5 filters at stride 1, pad 2",
    "[13x13x256] MAX POOL2: 3x3 filters at stride 2",
    "[13x13x256] NORM2: Normalization layer",
    "[13x13x384] CONV3: 384 3x3 filters at stride 1, pad 1",
    "[13x13x384] CONV4: 384 3x3 filters at stride 1, pad 1",
    "[13x13x256] CONV5: 256 3x3 filters at stride 1, pad 1",
    "[6x6x256] MAX POOL3: 3x3 filters at stride 2",
    "[4096] FC6: 4096 neurons",
    "[4096] FC7: 4096 neurons",
    "[1000] FC8: 1000 neurons",
]

NO_TORCH = """
import contextlib, io, sys
import nnc.cli
for argv in ({argvs}):
    with contextlib.redirect_stdout(io.StringIO()):
        rc = nnc.cli.main(argv)
    assert rc == 0, (argv, rc)
    assert "torch" not in sys.modules, f"nnc {{' '.join(argv)}} imported torch"
print("no torch")
"""


def test_check_and_show_do_not_import_torch():
    """check (the contract) and show, run through the CLI's entry point, leave torch unimported."""
    argvs = [["check", str(ALEXNET)], ["show", str(ALEXNET)], ["show", "--json", str(ALEXNET)],
             ["show", "--resolved", str(ALEXNET)]]
    code = NO_TORCH.format(argvs=", ".join(repr(a) for a in argvs))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "no torch"


def test_check_imports_nothing_heavy():
    """`nnc check` loads lark and pydantic only: not numpy, onnx, rich or Pillow either (each costs
    tens of milliseconds of the start-up bench/check_startup.py measures), nor what only some
    specs need (difflib for a misspelled word, name maps for `finetune(map=...)`)."""
    code = ("import contextlib, io, sys\nimport nnc.cli\nwith contextlib.redirect_stdout(io.StringIO()):\n"
            f"    assert nnc.cli.main(['check', {str(ALEXNET)!r}, {str(SPECS / 'seq_lstm.nnspec')!r}]) == 0\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'numpy', 'onnx', 'rich', 'PIL', 'torch', 'sklearn'}))\n"
            "print(sorted({'difflib', 'nnc.compiler.namemap'} & set(sys.modules)))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["[]", "[]"]


def test_check_alexnet_reports_its_size():
    """`nnc check` on a good spec exits 0 and names the parameter count."""
    r = run_nnc("check", ALEXNET)
    assert r.returncode == 0, r.stderr
    assert "ok (AlexNet: 62,378,344 parameters" in r.stdout


def test_show_prints_the_lecture_listing():
    """The listing's first lines are the lecture's, in order, and the total is 62,378,344."""
    r = run_nnc("show", ALEXNET)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    start = lines.index(LECTURE[0])
    assert lines[start:start + len(LECTURE)] == LECTURE
    assert "62,378,344" in lines[0]  # the header line
    total = next(line for line in lines if line.startswith("total"))
    assert "62,378,344" in total


def test_show_json_total_params():
    """`nnc show --json` is JSON whose total (and sum over layers) is AlexNet's 62,378,344."""
    r = run_nnc("show", "--json", ALEXNET)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["params"] == 62_378_344
    assert sum(layer["params"] for layer in doc["layers"]) == 62_378_344
    assert doc["listing"] == LECTURE


def test_a_reader_that_stops_early_is_not_an_error():
    """`nnc doctor ... | head -1`: the rest of the output meets a closed pipe. rich answers that
    with exit 1, which this CLI's contract reserves for a wrong spec or data."""
    p = subprocess.Popen([sys.executable, "-m", "nnc.cli", "doctor", str(SPECS / "digits_mlp.nnspec"), "--checks",
                          "init,reg,grad"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.stdout.readline().startswith("nnc doctor ")
    p.stdout.close()
    err = p.stderr.read()
    assert p.wait(timeout=300) == 0, err
    assert "Traceback" not in err
