"""What the fuzzer (bench/fuzz.py) found in the front end, one regression test per crash class:
each input is a user error (an NncError at a line:col, exit 1), never a Python exception, a
hang or a runaway allocation."""

import pytest
from conftest import run_nnc

import nnc
from nnc.diagnostics import render_all

M = "model M {\n    input vector(4)\n    dense 2\n}\n"  # a valid model, for section-level cases
HUGE = "1" + "0" * 400  # 10**400: more digits than a float holds


def errors(text: str, overrides: tuple[str, ...] = ()) -> list:
    """The diagnostics of `nnc check` on `text` (which must fail as a user error); they render."""
    with pytest.raises(nnc.NncError) as e:
        nnc.check(nnc.load_text(text, "t.nnspec", overrides))
    render_all(e.value.diagnostics)
    return e.value.diagnostics


def at(d) -> tuple[int, int]:
    return d.span.line, d.span.column


# ---------------------------------------------------------------- whole numbers past 64 bits


@pytest.mark.parametrize("text, where", [
    ("model M {\n    input vector(4)\n    dense fc1 " + HUGE + "\n}\n", (3, 15)),
    ("model M {\n    input vector(" + HUGE + ")\n    dense 2\n}\n", (2, 18)),
    ("model M {\n    input image(1, 8, 8)\n    conv 4 kernel 3x" + "9" * 5000 + "\n    dense 2\n}\n", (3, 19)),
    ("model M {\n    input vector(4)\n    repeat " + HUGE + " {\n        relu\n    }\n}\n", (3, 12)),
    (M + "init bias constant(" + HUGE + ")\n", (5, 20)),
    (M + "train seed " + str(2**70) + "\n", (5, 12)),
], ids=["dense", "input", "size", "repeat", "call", "seed"])
def test_whole_numbers_past_64_bits_are_an_error_at_the_number(text, where):
    """10**400 raised OverflowError (int too large to convert to float), a 5,000-digit size a
    ValueError out of the parser, and `train seed 2**70` passed check to fail in torch."""
    (d,) = errors(text)
    assert at(d) == where
    assert "this whole number is too large" in d.message
    assert "2**63" in d.help


def test_whole_numbers_up_to_64_bits_still_read():
    spec = nnc.load_text(M + f"train seed {2**63 - 1}\n", "t.nnspec")
    assert spec.train.seed == 2**63 - 1
    zeros = "0" * 5000  # leading zeros do not count (Python refuses to convert over 4,300 digits)
    spec = nnc.load_text(f"model M {{\n    input image(1, 8, 8)\n    conv 2 kernel 3x{zeros}3\n    dense 2\n}}\n"
                         f"train seed {zeros}7\n", "t.nnspec")
    assert spec.model.body[0].params.kernel == (3, 3) and spec.train.seed == 7


def test_a_huge_number_in_a_set_is_an_error_naming_the_set():
    (d,) = errors(M, (f"train.batch={HUGE}",))
    assert "this whole number is too large" in d.message and d.span.origin == f"--set train.batch={HUGE}"


# ---------------------------------------------------------------- nesting


@pytest.mark.parametrize("value", ["f(" * 490 + ")" * 490, "(" * 500 + "1" + ", 1)" * 500, "f(x=" * 400 + "1" + ")" * 400],
                         ids=["calls", "tuples", "keywords"])
def test_values_nested_past_the_limit_are_an_error(value):
    """490 calls or 500 tuples deep raised RecursionError (in the Transformer, the converter
    or format_value); the 65th level is the error, as for blocks."""
    (d,) = errors(M + "optimizer sgd(lr=" + value + ")\n")
    opened = [i for i, ch in enumerate(value) if ch == "("]  # sgd( is the first level
    assert at(d) == (5, len("optimizer sgd(lr=") + opened[63] + 1)
    assert d.message == "values are nested more than 64 deep"
    (d,) = errors(M, (f"optimizer.lr={value}",))
    assert "values are nested more than 64 deep" in d.message and d.span.origin == f"--set optimizer.lr={value}"


def test_nesting_up_to_the_limits_is_read():
    """64 blocks, and 64 levels of values inside the innermost: a user error, not a RecursionError."""
    value = "f(" * 63 + "(1, 2)" + ")" * 63
    text = "model M {\n    input vector(4)\n" + "repeat 1 {\n" * 63 + f"dense 2 units {value}\n" + "}\n" * 63 + "}\n"
    (d,) = errors(text)
    assert "units is given twice" in d.message
    pair = "(1, 2)"
    for _ in range(40):
        pair = f"({pair}, 3)"
    diags = errors(M + f"loss {pair} \\\n    {pair}\ntrain freeze {pair}\n")  # depth: within one value
    assert diags and not any("nested" in d.message for d in diags)


# ---------------------------------------------------------------- repeats of nothing


def check_bounded(tmp_path, text: str, seconds: float = 30, mb: int = 1024):
    """`nnc check` on `text` in a child process held to `mb` MB of address space (a runaway
    allocation is then a MemoryError, not the machine's memory) and `seconds`."""
    import resource
    import subprocess
    import sys

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (mb * 2**20, resource.getrlimit(resource.RLIMIT_AS)[1]))

    (tmp_path / "t.nnspec").write_text(text)
    try:
        return subprocess.run([sys.executable, "-m", "nnc.cli", "check", "t.nnspec"], cwd=tmp_path, capture_output=True,
                              text=True, timeout=seconds, preexec_fn=limit)
    except subprocess.TimeoutExpired:
        pytest.fail(f"nnc check ran over {seconds} s")


@pytest.mark.parametrize("body, message", [
    ("repeat 1000000000 {\n        relu7\n    }", "unknown layer 'relu7'"),
    ("repeat 100000000 {\n        residual {\n            relu7\n        }\n    }", "unknown layer 'relu7'"),
    ("repeat 2 {\n        repeat 1000000000 {\n            repeat -1 {\n                relu\n"
     "            }\n        }\n    }", "repeat needs a count >= 1"),
], ids=["invalid_layers", "invalid_residual", "invalid_inner_repeat"])
def test_a_repeat_whose_block_failed_is_not_expanded(tmp_path, body, message):
    """A repeat whose layers all failed counted 0 layers and expanded its nothing a billion
    times (minutes), or its empty residual blocks (gigabytes): its errors are reported once."""
    r = check_bounded(tmp_path, "model M {\n    input vector(4)\n    " + body + "\n    dense 2\n}\n")
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert r.stderr.count(": error: ") == 1 and message in r.stderr


# ---------------------------------------------------------------- the version line


@pytest.mark.parametrize("text, line", [("nnspec 1\n" + M + "nnspec 1\n", 6),
                                        ("nnspec 1\nnnspec M {\n    input vector(4)\n    dense 2\n}\n", 2)],
                         ids=["line", "block"])
def test_a_second_version_line_is_an_error(text, line):
    """After `nnspec 1`, a second version line was skipped silently, and `nnspec M { ... }` left
    a spec with no model and no error (AttributeError: 'NoneType' object has no attribute 'body')."""
    (d,) = errors(text)
    assert (at(d), d.message) == ((line, 1), "nnspec is given twice (first on line 1)")


# ---------------------------------------------------------------- what is read


def test_a_spec_over_10_mb_is_an_error(tmp_path):
    """read_spec_text read a file whole, however large; it reads at most 10 MB + 1 byte."""
    from nnc.compiler.load import MAX_BYTES, read_spec_text

    assert MAX_BYTES == 10_000_000
    (tmp_path / "big.nnspec").write_bytes(b"#" * (MAX_BYTES + 1))
    with pytest.raises(nnc.NncError) as e:
        read_spec_text(str(tmp_path / "big.nnspec"))
    assert "over 10 MB" in str(e.value)
    (tmp_path / "ok.nnspec").write_bytes(b"#" * MAX_BYTES)
    assert len(read_spec_text(str(tmp_path / "ok.nnspec"))) == MAX_BYTES


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom"])
def test_endless_devices_are_read_no_further_than_the_limit(device):
    """`nnc check /dev/zero` read without end (and grew without end); /dev/urandom likewise."""
    r = run_nnc("check", device, timeout=120)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr == f"nnc: error: {device}: over 10 MB, too large for a spec\n"


def test_a_path_too_long_for_the_system_is_an_error():
    """Path.exists() raised OSError (File name too long) out of read_spec_text."""
    from nnc.compiler.load import read_spec_text

    with pytest.raises(nnc.NncError) as e:
        read_spec_text("a" * 5000 + ".nnspec")
    assert str(e.value).endswith(".nnspec: cannot read (File name too long)")

def test_standard_input_over_10_mb_is_an_error():
    r = run_nnc("check", "-", input="#" * 10_000_001, timeout=120)
    assert r.returncode == 1 and "<stdin>" in r.stderr and "over 10 MB" in r.stderr


# ---------------------------------------------------------------- messages in the spec's words


@pytest.mark.parametrize("text, expected", [
    (M + "train epochs x early_stop(patience=3)\n",
     [(5, 7, "train epochs must be a whole number, got (x, early_stop(...))")]),
    (M + "regularize l2 .5 d()\n", [(5, 12, "regularize l2 must be a number, got (0.5, d(...))")]),
    (M + "optimizer sgd(lr=0.1), lr_mult(fc1=f(2), fc2=true)\n",
     [(5, 32, "lr_mult for fc1 must be a number >= 0, got f(...)"),
      (5, 42, "lr_mult for fc2 must be a number >= 0, got true")]),
    (M + 'data csv(path="x.csv", label=f(1))\n',
     [(5, 30, "csv: label must be a column name (a string) or a column index (a whole number), got f(...)")]),
    ("model M {\n    input image(1, 8, 8)\n    conv 4 3x3 kernel 3\n    dense 2 (1, (2, f(3)))\n}\n",
     [(3, 12, "conv: unexpected value '3x3'"), (4, 13, "dense: unexpected value '(1, (2, f(...)))'")]),
    (M + "schedule warmup(epochs=1), (1, 2)\n", [(5, 28, "expected schedule, got '(1, 2)'")]),
    # a value already reported (infinity) is not reported again inside the tuple that holds it
    (M + "regularize l2 1e999 5\noptimizer sgd(lr=0.1), lr_mult(fc1=1e999)\n",
     [(5, 15, "this number is too large for a float"), (6, 36, "this number is too large for a float")]),
], ids=["call_in_tuple", "call_after_number", "lr_mult", "csv_label", "size_and_tuple", "tuple_for_a_word", "reported"])
def test_messages_show_values_as_written(text, expected):
    """Messages showed Python internals: a call as {'kind': 'early_stop', 'args': [], ...}, a
    tuple as the reprs of its parse nodes, a size as (3, 3), true as True, and <reported>."""
    diags = errors(text)
    assert [(*at(d), d.message[:len(m)]) for d, (_, _, m) in zip(diags, expected)] == expected
    assert len(diags) == len(expected)


# ---------------------------------------------------------------- --set


@pytest.mark.parametrize("setting", ["train.epochs=", "optimizer.lr= ", "schedule.every=# five", "train.early_stop="])
def test_a_set_without_a_value_is_an_error_naming_it(setting):
    """`--set train.epochs=` (or a value that is only a comment) raised IndexError."""
    (d,) = errors(M, (setting,))
    assert d.span.origin == f"--set {setting}"
    assert d.message == "no value after '='" and "off" in d.help



@pytest.mark.parametrize("text, overrides, expected", [
    (M + "schedule 0.6\n", ("schedule.factor=0.5",), "expected schedule, got '0.6'"),
    (M, ("optimizer=0.6", "optimizer.lr=1"), "unknown optimizer setting '0.6'"),
    (M, ("loss=1x1", "loss.label_smoothing=0.1"), "loss takes one loss"),
], ids=["schedule", "optimizer", "loss"])
def test_a_set_argument_after_a_main_entry_that_is_a_number(text, overrides, expected):
    """--set schedule.KEY=V on a section whose only entry is a number made a call named by the
    number: TypeError ('float' object is not iterable) in the "did you mean"."""
    diags = errors(text, overrides)
    assert expected in [d.message for d in diags]


@pytest.mark.parametrize("text, overrides", [(M + "optimizer sgd(lr=0.1), lr_mult 0\n", ()),
                                             (M, ("optimizer.lr_mult=-0",)), (M, ('optimizer.lr_mult=""',))],
                         ids=["file", "set", "empty_string"])
def test_a_multiplier_table_that_is_a_falsy_value(text, overrides):
    """`lr_mult 0` (or --set optimizer.lr_mult=-0) raised AttributeError: 'int' object has no
    attribute 'items': a value that is false slipped past the form check."""
    (d,) = errors(text, overrides)
    assert d.message == "lr_mult reads lr_mult(LAYER=FACTOR, ...)"


# ---------------------------------------------------------------- bytes that are not text


def test_a_bad_byte_far_along_a_line_is_echoed_with_its_line():
    """The line echoed for a byte that is not UTF-8 was cut at 120 characters, so a bad byte
    past them had its caret beyond the echoed text."""
    from nnc.grammar.parse import decode

    with pytest.raises(nnc.NncError) as e:
        decode(b"model M {\n# " + b"9" * 200 + b"\xc3 and more\n}\n", "t.nnspec")
    (d,) = e.value.diagnostics
    assert at(d) == (2, 203) and "byte 0xc3" in d.message
    source, caret = render_all([d]).split("\n")[1:3]  # (a long line: the part around the byte)
    assert source[caret.index("^")] == "\ufffd" and source.startswith("    ...9")


# ---------------------------------------------------------------- search ranges


def test_range_values_are_checked_without_reparsing(monkeypatch):
    """check re-read the whole text for each bound and choice of each range: 105 ranges took
    7 s (a statement per layer: each re-read also renamed the ranges layer by layer, so the
    work grew with the cube of their number). The text is parsed once and each value put in
    place of its range in the statements; the ranges still report what they reach."""
    import nnc.grammar.parse as parse_module

    text = ("model M {\n    input image(1, 8, 8)\n    conv 4 kernel choice(3, 11)\n" + "    dropout uniform(0.1, 0.6)\n" * 50
            + "    dense fc1 intuniform(0, 8)\n    dense 10\n}\n"
            + "schedule multistep(at=(choice(10, 20), 30), factor=loguniform(0.01, 2))\n")
    spec = nnc.load_text(text, "t.nnspec")
    assert len(spec.search) == 54
    lark, calls = parse_module._parser(), []
    real = lark.parse
    monkeypatch.setattr(lark, "parse", lambda *a, **k: calls.append(a) or real(*a, **k))
    with pytest.raises(nnc.NncError) as e:
        nnc.check(spec)
    assert len(calls) == 1
    assert [(at(d), d.message) for d in e.value.diagnostics] == [
        ((3, 19), "this range reaches values the spec refuses: at its choice 11, conv1: a 11x11 kernel does not fit "
                  "the 8x8 input"),
        ((54, 15), "this range reaches values the spec refuses: at its lower bound 0, fc1 units must be > 0, got 0"),
        ((57, 52), "this range reaches values the spec refuses: at its upper bound 2, multistep factor must be <= 1, got 2")]


# ---------------------------------------------------------------- work in proportion to the numbers written


def test_a_recurrent_stack_counts_its_layers_toward_the_limit(tmp_path):
    """`lstm 3 layers 10000000` passed the 10,000-layer limit as one layer, then shape inference
    made 80 million tensor records (MemoryError after 24 GB). Each of its layers counts."""
    r = check_bounded(tmp_path, "model M {\n    input sequence(8, 8)\n    lstm 3 layers 10000000\n    dense 2\n}\n")
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "the model has 10,000,001 layers, more than nnc builds (10,000)" in r.stderr
    (d,) = errors("model M {\n    input sequence(8, 8)\n    repeat 100 {\n        gru 3 layers 101 return sequence\n"
                  "    }\n    dense 2\n}\n")
    assert (at(d), d.message) == ((3, 12), "repeat 100 makes the model over 10,000 layers, more than nnc builds")
    nnc.check(nnc.load_text("model M {\n    input sequence(8, 8)\n    rnn 3 layers 9999\n}\nloss mse\n", "t.nnspec"))


def test_the_projection_stride_is_computed_not_searched(tmp_path):
    """The stride of a residual block's projection was searched for among 1..H: a block that
    grows a 10**9-pixel-high image ran through a billion strides per axis before its error."""
    r = check_bounded(tmp_path, "model M {\n    input image(1, 1000000000, 1000000000)\n    residual project {\n"
                                "        conv 2 kernel 1 pad 1\n    }\n    global_avgpool\n    dense 2\n}\n", seconds=20)
    assert r.returncode == 1 and "no 1x1 stride maps 1000000000x1000000000 to 1000000002x1000000002" in r.stderr
    from nnc.compiler.shapes import _shortcut_stride

    def searched(size, out):  # the former definition
        return next((s for s in range(1, size + 1) if (size - 1) // s + 1 == out), None)

    assert all(_shortcut_stride(size, out) == searched(size, out) for size in range(1, 130) for out in range(-1, 135))


# ---------------------------------------------------------------- what check passes, train can run


@pytest.mark.parametrize("data, expected", [("data digits, seed -1", (5, 19, "data seed must be >= 0, got -1")),
                                            ("data synthetic(seed=-1)", (5, 21, "synthetic seed must be >= 0, got -1"))],
                         ids=["split", "synthetic"])
def test_a_negative_data_seed_is_an_error(data, expected):
    """`data seed -1` passed check, and nnc train then died in numpy (ValueError: expected
    non-negative integer) with a traceback; the train seed may stay negative (torch takes it)."""
    (d,) = errors("model M {\n    input vector(64)\n    dense 10\n}\n" + data + "\n")
    assert (*at(d), d.message) == expected
    nnc.check(nnc.load_text("model M {\n    input vector(64)\n    dense 10\n}\ndata digits\ntrain seed -5\n", "t.nnspec"))
