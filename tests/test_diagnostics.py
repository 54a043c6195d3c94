"""What a user sees when a spec or a command line is wrong, through the real CLI.

Every user error reads `path:line:col: error: message`, then the source line and a caret under
the offending text, exits 1 (2 for command-line misuse) and never prints a traceback. The cases
of the big table are checked by ONE `nnc check` run over all their files (it reports each file and
goes on), so the table is cheap to extend.
"""

import json
import re

import pytest
from conftest import run_nnc

M = "model M {\n    input vector(4)\n    dense 2\n}\n"  # a valid model, for section-level cases

# name -> (file text, [(line, col, message substring, help substring or None), ...] in output order)
CASES = {
    # syntax
    "stray_paren": ("model M {\n    input vector(4)\n    dense 3)\n}\n",
                    [(3, 12, "unexpected ')'", None)]),
    "unclosed_brace": ("model M {\n    input vector(4)\n    dense 3\n",
                       [(1, 9, "this '{' is never closed", "end the block with '}'")]),
    "unclosed_call": (M + "optimizer sgd(lr=0.1\n",
                      [(5, 21, "unexpected end of line", "')'")]),
    "stray_char": (M + "loss @mse\n", [(5, 6, "unexpected character '@'", None)]),
    "block_on_one_line": ("model M {\n    input image(3, 8, 8)\n    repeat 2 { conv 4 kernel 3 }\n}\n",
                          [(3, 16, "unexpected 'conv' after '{'", "the block's lines go below it")]),
    "brace_not_alone": ("model M {\n    input vector(4)\n    dense 2 }\n", [(3, 13, "'}' must be on a line of its own", None)]),
    "stray_brace": (M + "}\n", [(5, 1, "this '}' closes no '{'", None)]),
    "unclosed_string": (M + 'data npz("x.npz)\n', [(5, 10, "this string is never closed", 'ends with "')]),
    "non_ascii_word": (M + "init bias constant(0) before relü\n",
                       [(5, 33, "unexpected character 'ü'", "ASCII letters")]),
    # unknown words, with a suggestion
    "unknown_layer": ("model M {\n    input image(3, 8, 8)\n    convv 4 kernel 3\n    relu\n}\n",
                      [(3, 5, "unknown layer 'convv'", "did you mean 'conv'?")]),
    "misspelt_relu": ("model M {\n    input vector(4)\n    dense 4\n    rleu\n    dense 2\n}\n",
                      [(4, 5, "unknown layer 'rleu'", "did you mean 'relu'?")]),
    "unknown_optimizer": (M + "optimizer adma(lr=0.1)\n",
                          [(5, 11, "unknown optimizer 'adma'", "did you mean 'adam'?")]),
    "unknown_section": (M + "lossy mse\n", [(5, 1, "unknown section 'lossy'", "did you mean 'loss'?")]),
    # an unknown keyword points at the keyword, not at its value
    "unknown_kwarg": (M + "optimizer sgd(lr=0.1, momentun=0.9)\n",
                      [(5, 23, "unknown sgd option 'momentun'", "did you mean 'momentum'?")]),
    # one misspelt option is one error (not also "needs kernel" and "unexpected value 3")
    "misspelt_option": ("model M {\n    input image(3, 8, 8)\n    conv 4 kernal 3\n    dense 2\n}\n",
                        [(3, 12, "unknown conv option 'kernal'", "did you mean 'kernel'?")]),
    # an option without its value: one error, not also "kernel has the wrong number of values"
    "option_without_value": ("model M {\n    input image(3, 8, 8)\n    conv 4 kernel\n    dense 2\n}\n",
                             [(3, 12, "conv: kernel needs a value", "kernel VALUE")]),
    # options written after a call instead of inside it (not "unknown setting 'sgd', did you mean 'sgd'")
    "option_after_call": (M + "optimizer sgd(lr=0.1) momentum 0.9\n",
                          [(5, 23, "unexpected 'momentum' after the optimizer", "sgd(name=value, ...)")]),
    "unknown_option_value": ("model M {\n    input vector(4)\n    dense 2 bogus 3\n}\n",
                             [(3, 13, "unknown dense option 'bogus'", "bias, units")]),
    # a keyword from another framework: one error, and the spelling nnc reads
    "multistep_milestones": (M + "schedule multistep(milestones=(30, 60))\n",
                             [(5, 20, "unknown multistep option 'milestones'",
                               "multistep needs `at`: did you mean multistep(at=(30, 60))?")]),
    "multistep_bare": (M + "schedule multistep\n",
                       [(5, 10, "multistep needs `at`", "e.g. multistep(at=(30, 60))")]),
    # bad values, at the value
    "dropout_range": ("model M {\n    input vector(4)\n    dense 8\n    dropout 1.5\n    dense 2\n}\n",
                      [(4, 13, "p must be < 1, got 1.5", None)]),
    "lr_and_momentum": (M + "optimizer sgd(lr=-0.1, momentum=1.0)\n",
                        [(5, 18, "sgd lr must be > 0, got -0.1", None),
                         (5, 33, "sgd momentum must be < 1, got 1", None)]),
    "nesterov_without_momentum": (M + "optimizer sgd(lr=0.1, nesterov=true)\n",
                                  [(5, 11, "nesterov needs momentum > 0", None)]),
    # a size read as (h, w) fails for both, but it is one mistake
    "stride_zero": ("model M {\n    input image(3, 8, 8)\n    conv 4 kernel 3 stride 0\n    dense 2\n}\n",
                    [(3, 28, "conv1 stride must be >= 1, got 0", None)]),
    "early_stop_patience": (M + "train early_stop(patience=0)\n",
                            [(5, 18, "train early_stop.patience must be >= 1, got 0", None)]),
    # a malformed search range is one error (not also "lr must be a number, got None")
    "bad_range": (M + "optimizer adam(lr=loguniform(1e-1, 1e-4))\n",
                  [(5, 19, "loguniform needs low < high, got 0.1 >= 0.0001", None)]),
    # a number setting without its value, or given true, is an error (pydantic alone would read 1)
    "bare_setting": (M + "train epochs, batch 3\nregularize max_norm\n",
                     [(5, 7, "train: epochs needs a value", "epochs VALUE"),
                      (6, 12, "regularize: max_norm needs a value", None)]),
    "true_for_a_number": (M + "optimizer sgd(lr=true, momentum=0.9)\n", [(5, 18, "sgd lr must be a number, got true", None)]),
    # a value of the wrong form says which form is meant
    "size_forms": ("model M {\n    input image(3, 8, 8)\n    conv 4 kernel 3x3x3\n    conv 4 kernel 3 pad same\n"
                   "    dense 2\n}\ntrain freeze 3\n",
                   [(3, 19, "conv1 kernel must be one number or HxW, like 3 or 3x3, got (3, 3, 3)", None),
                    (4, 25, "conv2 pad must be one number or HxW", None),
                    (7, 14, "train freeze must be one or more names, like fc8 or (fc7, fc8), got 3", None)]),
    "batch_zero": (M + "train batch 0, epochs 3\n", [(5, 13, "train batch must be >= 1, got 0", None)]),
    # shapes
    "kernel_too_big": ("model M {\n    input image(3, 8, 8)\n    conv 4 kernel 11\n    dense 2\n}\n",
                       [(3, 19, "11x11 kernel does not fit the 8x8 input", "smaller kernel or more padding")]),
    "dense_after_sequence": ("model M {\n    input sequence(10, 4)\n    lstm 8 return sequence\n    dense 2\n}\n",
                             [(4, 5, "dense after an unflattened sequence sequence(10, 8)", "return last")]),
    "residual_mismatch": ("model M {\n    input image(3, 8, 8)\n    conv 4 kernel 3 pad 1\n"
                          "    residual {\n        conv 8 kernel 3 pad 1\n    }\n    dense 2\n}\n",
                          [(4, 5, "the block maps image(4, 8, 8) to image(8, 8, 8)", "residual project")]),
    # versions
    "version_2": ("nnspec 2\n" + M, [(1, 1, "this nnc reads nnspec 1, the file says 2", "newer nnc")]),
    "version_late": (M + "nnspec 1\n", [(5, 1, "the version line must come first", None)]),
    # empty and not-text files
    "empty": ("", [(1, 1, "empty spec: no model block", "model NAME")]),
    "comments_only": ("\n# nothing here yet\n\n", [(1, 1, "empty spec: no model block", None)]),
    "no_model": ("loss mse\n", [(1, 1, "no model block", "model NAME")]),
    "nul_byte": ("# café \0x\n", [(1, 8, "not a text file (binary data: byte 0x00)", "UTF-8 text")]),
    "png": (b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR" + bytes(range(256)),
            [(1, 1, "not a text file (binary data: byte 0x89)", "UTF-8 text")]),
    # several syntax errors: each line's, not only the first (a statement is one line)
    "several_syntax": ("model M {\n    input vector(4)\n    dense 2,\n    dense 3 (\n    dense 2\n}\n"
                       "train batch 3,,\nloss mse)\n",
                       [(3, 13, "unexpected end of line", None), (4, 14, "unexpected end of line", None),
                        (7, 15, "unexpected ','", None), (8, 9, "unexpected ')'", None)]),
    # what the builder could not run, or would run silently wrong
    "dotted_name": ("model M {\n    input vector(4)\n    dense fc.1 2\n}\n",
                    [(3, 5, "the layer name 'fc.1' may hold only letters, digits and _", "res1.conv1")]),
    "option_twice": ("model M {\n    input image(1, 8, 8)\n    conv 2 kernel 3 kernel 5\n    dense 3 units 4\n}\n"
                     "optimizer sgd(lr=0.1, lr=0.2)\n",
                     [(3, 21, "conv: kernel is given twice", None), (4, 13, "dense: units is given twice", None),
                      (6, 23, "sgd: lr is given twice", None)]),
    "empty_blocks": ("model M {\n    input vector(4)\n    residual {\n    }\n    repeat 2 {\n    }\n    dense 2\n}\n",
                     [(3, 5, "residual needs a { ... } block of layers", None),
                      (5, 5, "repeat of an empty block", None)]),
    "huge_repeat": ("model M {\n    input vector(4)\n    repeat 100000 {\n        repeat 100000 {\n"
                    "            relu\n        }\n    }\n    dense 2\n}\n",
                    [(4, 16, "repeat 100,000 makes the model over 10,000 layers", None)]),
    "layers_after_repeats": ("model M {\n    input vector(4)\n    repeat 100 {\n        repeat 100 {\n"
                             "            relu\n        }\n    }\n    dense 2\n}\n",
                             [(1, 1, "the model has 10,001 layers, more than nnc builds (10,000)", None)]),
    "too_deep": ("model M {\n    input vector(4)\n" + "    repeat 1 {\n" * 70 + "    dense 2\n" + "    }\n" * 70 + "}\n",
                 [(66, 14, "blocks are nested more than 64 deep", None)]),
    "infinity": (M + "optimizer sgd(lr=1e400)\n", [(5, 18, "this number is too large for a float", None)]),
    "lax_values": (M + "optimizer sgd(lr=\"0.1\", momentum=0.9, nesterov=yes)\nregularize l2 1e-4, decay_bias 1\n",
                   [(5, 18, 'sgd lr must be a number, got "0.1"', None),
                    (5, 48, "sgd nesterov must be true or false, got yes", None),
                    (6, 32, "regularize decay_bias must be true or false, got 1", None)]),
    "version_extra": ("nnspec 1 2\n" + M, [(1, 1, "this nnc reads nnspec 1, the file says 1 2", None)]),
    # a form feed or U+2028 inside a line is not a line break: the right line is echoed
    "form_feed": ("# a\fb \u2028 c\n" + M + "loss msee\n", [(6, 6, "unknown loss 'msee'", "did you mean 'mse'?")]),
    # a search range is checked at every value it reaches, not only its representative
    "range_bounds": ("model M {\n    input image(1, 8, 8)\n    conv 4 kernel choice(3, 11)\n    dropout uniform(0.2, 1.5)\n"
                     "    dense fc1 intuniform(0, 8)\n    dense 10\n}\n"
                     "optimizer sgd(lr=loguniform(1e-4, 1e-1))\ntrain batch choice(16, 0)\n",
                     [(3, 19, "at its choice 11, conv1: a 11x11 kernel does not fit the 8x8 input", "smaller kernel"),
                      (4, 13, "at its upper bound 1.5, drop1 p must be < 1, got 1.5", None),
                      (5, 15, "at its lower bound 0, fc1 units must be > 0, got 0", None),
                      (9, 13, "at its choice 0, train batch must be >= 1, got 0", None)]),
    "fractional_range": ("model M {\n    input vector(4)\n    dense fc2 loguniform(16, 256)\n    dense 10\n}\n",
                         [(3, 15, "fc2 units must be a whole number, got 64", "intuniform(LOW, HIGH) draws whole numbers")]),
    # what early stopping and on_plateau watch must exist
    "watch_without_val": (M + "data synthetic, val 0\ntrain early_stop(patience=2)\n",
                          [(6, 7, "early_stop watches val_loss, but data val is 0", "val 0.1")]),
    "accuracy_of_regression": (M + "loss mse\nschedule on_plateau(metric=val_accuracy)\n",
                               [(6, 10, "on_plateau watches val_accuracy, but mse is a regression loss", "val_loss")]),
    # what a fixed data set is, compared with the model before any data is read
    "digits_input": ("model M {\n    input image(3, 32, 32)\n    conv 4 kernel 3\n    dense 10\n}\ndata digits\n",
                     [(6, 1, "digits examples are 8x8x1 images (64 values), but the model's input is image(3, 32, 32)",
                       "image(1, 8, 8), vector(64) or sequence(8, 8)")]),
    "digits_classes": ("model M {\n    input vector(64)\n    dense 7\n}\ndata digits\n",
                       [(3, 5, "digits has 10 classes, but the model ends in 7 scores", "dense layer of 10 units")]),
    "pca_dims": ("model M {\n    input vector(64)\n    dense 10\n}\ndata digits, preprocess pca(dims=100) whiten\n",
                 [(5, 25, "pca keeps dims=100 components, but the input has 64 features", "at most 64"),
                  (5, 39, "one pca or whiten step at most", None)]),
    "float_size": ("model M {\n    input vector(64)\n    dense 10.0\n}\n",
                   [(3, 11, "fc1 units must be a whole number, got 10.0", "without a decimal point: 10")]),
    "missing_comma": (M + "train batch 32 epochs 3\nregularize l2 1e-4 max_norm 3\n",
                      [(5, 16, "train: epochs follows batch's value without a comma", "train batch ..., epochs ..."),
                       (6, 20, "regularize: max_norm follows l2's value without a comma", None)]),
    # a misspelled word is the one error, not the emptiness it leaves behind
    "only_layer_misspelled": ("model M {\n    input vector(64)\n    Dense 10\n}\n",
                              [(3, 5, "unknown layer 'Dense'", "did you mean 'dense'?")]),
    "model_misspelled": ("modle M {\n    input vector(64)\n    dense 10\n}\n",
                         [(1, 1, "unknown section 'modle'", "did you mean 'model'?")]),
    # several mistakes: all of them, in file order
    "several": ("model M {\n    input image(3, 8, 8)\n    convv 4 kernel 3\n    relu\n    dropout 1.5\n"
                "    dense 2\n}\noptimizer adma(lr=0.1)\ntrain batch 0, epocs 3\n",
                [(3, 5, "unknown layer 'convv'", "did you mean 'conv'?"),
                 (5, 13, "p must be < 1, got 1.5", None),
                 (8, 11, "unknown optimizer 'adma'", "did you mean 'adam'?"),
                 (9, 13, "train batch must be >= 1, got 0", None),
                 (9, 16, "unknown train setting 'epocs'", "did you mean 'epochs'?")]),
    # shape errors and unknown layer names of the same pass, in file order
    "shape_and_references": ("model M {\n    input image(3, 8, 8)\n    maxpool kernel 9\n    dense 2\n}\n"
                             "init c9 weights gaussian(std=0.1)\noptimizer sgd(lr=0.1), lr_mult(fc9=10)\n"
                             "train freeze c2\n",
                             [(3, 20, "pool1: a 9x9 window does not fit the 8x8 input", None),
                              (6, 6, "unknown layer 'c9'", None),
                              (7, 32, "unknown layer 'fc9'", "did you mean 'fc1'?"),
                              (8, 14, "unknown layer 'c2'", None)]),
}

HEAD = re.compile(r"^(?P<where>[^:\n]+)(?::(?P<line>\d+):(?P<col>\d+))?: (?P<severity>error|warning): (?P<message>.*)$")


def diagnostics(stderr: str) -> list[dict]:
    """The rendered diagnostics: where, line, col, severity, message, source and caret lines, help."""
    out = []
    for line in stderr.splitlines():
        m = HEAD.match(line)
        if m:
            out.append({**m.groupdict(), "source": None, "caret": None, "help": None})
        elif out and line.startswith("help: "):
            out[-1]["help"] = line[len("help: "):]
        elif out and line.startswith("    "):
            out[-1]["source" if out[-1]["source"] is None else "caret"] = line[4:]
    return out


def assert_at(d: dict, text: str, line: int, col: int, message: str, help: str | None = None) -> None:
    """`d` is at line:col of `text`, with that line echoed and the caret under column `col`."""
    assert (int(d["line"]), int(d["col"])) == (line, col), d
    assert message in d["message"], d
    if help is not None:
        assert d["help"] and help in d["help"], d
    lines = text.split("\n") if isinstance(text, str) else None  # as editors count lines: \f is no break
    if lines is not None and not (lines[line - 1:] or [""])[0].strip():
        assert d["source"] is None and d["caret"] is None, d  # nothing to echo on a blank line
        return
    assert d["caret"] is not None and d["caret"].index("^") == col - 1, d
    if lines is not None:
        shown = re.sub(r"[\x00-\x08\x0b-\x1f\x7f]", "\ufffd", lines[line - 1].expandtabs(1))
        assert d["source"] == shown, d  # control characters are echoed as U+FFFD


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    """One `nnc check` over every case's file: {file name: its diagnostics}, and the process."""
    d = tmp_path_factory.mktemp("cases")
    for name, (text, _) in CASES.items():
        (d / f"{name}.nnspec").write_bytes(text if isinstance(text, bytes) else text.encode())
    r = run_nnc("check", *(f"{n}.nnspec" for n in CASES), cwd=d)
    by_file: dict[str, list] = {}
    for diag in diagnostics(r.stderr):
        by_file.setdefault(diag["where"], []).append(diag)
    return by_file, r


def test_batch_exits_1_without_traceback(batch):
    """A run with bad specs exits 1, and no user error is a Python crash."""
    _, r = batch
    assert r.returncode == 1
    assert "Traceback" not in r.stdout + r.stderr
    assert r.stdout == ""  # not one of them is reported ok
    assert "\x1b" not in r.stderr and "\r" not in r.stderr  # binary input is not echoed raw


@pytest.mark.parametrize("name", CASES)
def test_error_position_message_and_caret(batch, name):
    """Each case reports exactly its errors, at line:col, with the caret under that column."""
    text, expected = CASES[name]
    got = batch[0].get(f"{name}.nnspec", [])
    assert [(int(d["line"]), int(d["col"])) for d in got] == [(line, col) for line, col, *_ in expected], got
    assert all(d["severity"] == "error" for d in got)
    for d, (line, col, message, help) in zip(got, expected):
        assert_at(d, text, line, col, message, help)


def test_unknown_word_is_underlined_whole(batch):
    """The caret underlines the whole unknown word, not one character of it."""
    (d,) = batch[0]["unknown_optimizer.nnspec"]
    assert d["caret"].strip() == "^~~~"


def test_byte_order_mark_and_stdin(tmp_path):
    """A file saved with a UTF-8 byte-order mark reads like one without; `-` reads standard input."""
    (tmp_path / "bom.nnspec").write_bytes(b"\xef\xbb\xbf" + M.encode() + b"loss msee\n")
    r = run_nnc("check", "bom.nnspec", cwd=tmp_path)
    (d,) = diagnostics(r.stderr)
    assert_at(d, M + "loss msee\n", 5, 6, "unknown loss 'msee'")
    r = run_nnc("check", "-", cwd=tmp_path, input=M + "loss msee\n")
    (d,) = diagnostics(r.stderr)
    assert d["where"] == "<stdin>" and r.returncode == 1
    assert_at(d, M + "loss msee\n", 5, 6, "unknown loss 'msee'")
    r = run_nnc("check", "-", cwd=tmp_path, input=M)
    assert r.returncode == 0 and r.stdout.startswith("<stdin>: ok"), r.stderr


def test_string_values_are_not_echoed_raw(tmp_path):
    """A message that quotes the user's text never sends its control characters to the terminal."""
    (tmp_path / "e.nnspec").write_text(M + 'train batch "\x1b]0;pwn\x07"\n')
    r = run_nnc("check", "e.nnspec", cwd=tmp_path)
    assert r.returncode == 1 and "\x1b" not in r.stderr and "\x07" not in r.stderr
    assert 'got "\ufffd]0;pwn\ufffd"' in r.stderr


def test_a_long_line_is_echoed_around_the_error(tmp_path):
    """A 5,000-character value: the message says its start and length, the source line is shown
    as the part around the error with `...` where it was cut, and the caret still points at it;
    `--json` keeps the whole message."""
    (tmp_path / "e.nnspec").write_text("model M {\n    input vector(64)\n    dense 10 " + "x" * 5000 + "\n}\n")
    r = run_nnc("check", "e.nnspec", cwd=tmp_path)
    lines = r.stderr.splitlines()
    assert r.returncode == 1 and max(map(len, lines)) < 200, lines
    assert "unknown dense option 'xxxxxxxx" in lines[0] and "... (5,002 characters)" in lines[0]
    source, caret = lines[1], lines[2]
    assert source.startswith("        dense 10 xxx") and source.endswith("...")
    assert source[caret.index("^") - 9:caret.index("^")] == "dense 10 "
    assert "x" * 5000 in run_nnc("check", "--json", "e.nnspec", cwd=tmp_path).stdout
    name = "n" * 300  # the error far along the line: cut on both sides, the caret under it
    (tmp_path / "f.nnspec").write_text(f"model M {{\n    input vector(64)\n    dense {name} 10 kernal 3 {'y' * 300}\n}}\n")
    lines = run_nnc("check", "f.nnspec", cwd=tmp_path).stderr.splitlines()
    source, caret = lines[1], lines[2]
    assert source.startswith("    ...n") and source.endswith("...") and len(source) < 200
    assert source[caret.index("^"):].startswith("kernal 3")


def test_missing_file_and_directory(tmp_path):
    """A path that is not a readable file is a user error naming the path, not a traceback."""
    (tmp_path / "adir").mkdir()
    r = run_nnc("check", "nosuch.nnspec", "adir", cwd=tmp_path)
    assert r.returncode == 1
    assert "nnc: error: nosuch.nnspec: no such file" in r.stderr
    assert "nnc: error: adir: is a directory" in r.stderr
    assert "Traceback" not in r.stderr


def test_stride_warning_shows_the_arithmetic(tmp_path):
    """A stride that does not divide evenly is a warning with the arithmetic, and exit 0. The file
    has no version line: it is read as nnspec 1."""
    text = "model M {\n    input image(3, 224, 224)\n    conv 96 kernel 11 stride 4\n    relu\n    dense 10\n}\ndata synthetic\n"
    (tmp_path / "s.nnspec").write_text(text)
    r = run_nnc("check", "s.nnspec", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    (d,) = diagnostics(r.stderr)
    assert d["severity"] == "warning"
    assert_at(d, text, 3, 30, "(224 - 11) / 4 + 1 = 54.25")
    assert "floored to 54" in d["message"]
    assert r.stdout.startswith("s.nnspec: ok (M: ")


def test_set_errors_name_the_set(tmp_path):
    """A bad --set value is reported against the --set that wrote it, not a spec position."""
    (tmp_path / "m.nnspec").write_text(M)
    r = run_nnc("check", "m.nnspec", "--set", "optimizer.lr=-1", "--set", "train.batch=0", cwd=tmp_path)
    assert r.returncode == 1
    lines = r.stderr.splitlines()
    assert "--set optimizer.lr=-1: error: sgd lr must be > 0, got -1" in lines
    assert "--set train.batch=0: error: train batch must be >= 1, got 0" in lines
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("bad", ["lr=0.1", "optimizer.lr", "model=x", "optimizer.lr.x=1", "optimizer.=3"])
def test_malformed_set_is_misuse_reported_once(tmp_path, bad):
    """A --set that is not SECTION.KEY=VALUE is command-line misuse (exit 2), said once for all specs."""
    (tmp_path / "m.nnspec").write_text(M)
    (tmp_path / "n.nnspec").write_text(M)
    r = run_nnc("check", "m.nnspec", "n.nnspec", "--set", bad, cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.count(f"--set {bad}: expected SECTION.KEY=VALUE") == 1, r.stderr
    assert "Traceback" not in r.stderr


def test_set_reaches_the_schedule_and_its_warmup(tmp_path):
    """--set schedule.KEY sets an option of the main schedule, as optimizer.lr does for the optimizer."""
    (tmp_path / "m.nnspec").write_text(M + "schedule on_plateau(metric=val_accuracy, factor=0.1)\n")
    r = run_nnc("show", "m.nnspec", "--resolved", "--json", "--set", "schedule.factor=0.5",
                "--set", "schedule.warmup=(epochs=2)", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    text = json.loads(r.stdout)["resolved"]["schedule"]["text"]
    assert text.startswith("warmup(epochs=2") and "on_plateau(metric=val_accuracy, factor=0.5" in text
    r = run_nnc("check", "m.nnspec", "--set", "schedule.k=3", cwd=tmp_path)
    assert r.returncode == 1 and "--set schedule.k=3: error: unknown on_plateau option 'k'" in r.stderr


def test_set_off_returns_an_entry_to_its_default():
    from nnc.compiler.load import load_text

    text = ("model M {\n input vector(4)\n dense 2\n}\ndata digits, val 0.2\nschedule step(every=2), warmup(epochs=1)\n"
            "train epochs 3, ema 0.9, early_stop(patience=2)\n")
    spec = load_text(text, overrides=("train.early_stop=off", "train.ema=none", "schedule.warmup=off"))
    assert spec.train.early_stop is None and spec.train.ema is None and spec.schedule.warmup is None
    assert spec.train.epochs == 3 and spec.schedule.main.kind == "step"


@pytest.mark.parametrize("setting, value, problem", [("optimizer.lr", ")", "unexpected ')'"),
                                                     ("schedule", "step(every=5", "unexpected end of line")])
def test_set_value_that_does_not_parse(tmp_path, setting, value, problem):
    """--set text that does not parse says so, naming the --set, without nnc's rewrite of it."""
    (tmp_path / "m.nnspec").write_text(M)
    r = run_nnc("check", "m.nnspec", "--set", f"{setting}={value}", cwd=tmp_path)
    assert r.returncode == 1
    assert r.stderr.startswith(f"--set {setting}={value}: error: cannot read {value!r} as a value: {problem}")
    assert "x 0 )" not in r.stderr and "schedule step" not in r.stderr and "Traceback" not in r.stderr


def test_a_set_with_a_line_break_is_misuse(tmp_path):
    (tmp_path / "m.nnspec").write_text(M)
    r = run_nnc("check", "m.nnspec", "--set", "train=batch 32\nepochs 3", cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "a --set is one line" in r.stderr and "--set 'train=batch 32, epochs 3'" in r.stderr


@pytest.mark.parametrize("setting, section, text", [
    ("optimizer.lr_mult=(fc1=10)", "optimizer", "sgd(lr=0.01, momentum=0.9, nesterov=false), lr_mult(fc1=10)"),
    ("train.freeze=(fc1, fc2)", "train", "freeze (fc1, fc2)"),
    ("init.bias=constant(1) before relu", "init", "bias constant(value=1) before relu"),
])
def test_set_forms_on_a_spec_without_the_section(tmp_path, setting, section, text):
    """lr_mult on the default optimizer, a tuple, a rule of several words: each as if written."""
    (tmp_path / "m.nnspec").write_text("model M {\n    input vector(64)\n    dense fc1 32\n    relu\n"
                                       "    dense fc2 10\n    dense fc3 10\n}\n")
    r = run_nnc("show", "m.nnspec", "--resolved", "--json", "--set", setting, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert text in json.loads(r.stdout)["resolved"][section]["text"]


@pytest.mark.parametrize("argv", [[], ["check"], ["check", "--bogus", "m.nnspec"], ["frobnicate"]],
                         ids=["no-command", "no-spec", "unknown-flag", "unknown-command"])
def test_command_line_misuse_exits_2(tmp_path, argv):
    """Misusing the command line is exit 2 with a usage line, unlike a wrong spec (exit 1)."""
    (tmp_path / "m.nnspec").write_text(M)
    r = run_nnc(*argv, cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.startswith("usage: nnc")
    assert "Traceback" not in r.stderr


def test_freeze_lists_and_freezing_everything(tmp_path):
    """`freeze (fc1, fc2)` (a tuple, read as a call) names two layers; freezing every layer with
    parameters leaves nothing to train and is refused before any data is loaded."""
    body = "model M {\n    input vector(4)\n    dense fc1 3\n    relu\n    dense fc2 2\n}\n"
    (tmp_path / "one.nnspec").write_text(body + "train freeze (fc1)\ndata synthetic\n")
    (tmp_path / "all.nnspec").write_text(body + "train freeze (fc1, fc2)\ndata synthetic\n")
    r = run_nnc("check", "one.nnspec", "all.nnspec", cwd=tmp_path)
    assert "one.nnspec: ok" in r.stdout
    (d,) = diagnostics(r.stderr)
    assert d["where"] == "all.nnspec"
    assert_at(d, body + "train freeze (fc1, fc2)\ndata synthetic\n", 7, 7, "every layer with parameters is frozen", "leave at least one")


def test_old_mac_line_ends_are_line_ends(tmp_path):
    (tmp_path / "cr.nnspec").write_bytes(b"model M {\r    input vector(64)\r    densse 10\r}\r")
    r = run_nnc("check", "cr.nnspec", cwd=tmp_path)
    assert r.returncode == 1 and "\r" not in r.stderr
    assert r.stderr.startswith("cr.nnspec:3:5: error: unknown layer 'densse'")

