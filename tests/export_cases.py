"""Tiny specs that use each layer kind, shared by the export and compile tests."""

import torch

# kind -> (input, body lines); every kind of LAYERS must appear here (tests check that)
KINDS = {
    "conv": ("image(3, 9, 9)", ["conv 4 kernel 3 stride 2 pad 1", "conv 6 kernel 3x2 dilation 2 groups 2 bias false"]),
    "maxpool": ("image(2, 9, 9)", ["maxpool 3 stride 2 pad 1"]),
    "avgpool": ("image(2, 9, 9)", ["avgpool 3 stride 2 pad 1"]),
    "global_avgpool": ("image(3, 5, 5)", ["global_avgpool"]),
    "lrn": ("image(7, 4, 4)", ["lrn size 5 alpha 0.1 beta 0.75 k 2", "lrn size 4 alpha 0.2 beta 0.5 k 1"]),
    "batchnorm": ("image(3, 4, 4)", ["batchnorm", "flatten", "batchnorm eps 1e-3"]),
    "layernorm": ("image(3, 4, 4)", ["layernorm", "flatten", "dense 6", "layernorm"]),
    "dense": ("image(2, 3, 3)", ["dense 5", "dense 4 bias false"]),
    "flatten": ("sequence(4, 3)", ["flatten"]),
    "dropout": ("vector(6)", ["dropout 0.5", "dense 3"]),
    "embedding": ("tokens(5, 11)", ["embedding 4", "flatten"]),
    "relu": ("vector(6)", ["relu"]),
    "leaky_relu": ("vector(6)", ["leaky_relu 0.2"]),
    "prelu": ("image(3, 4, 4)", ["prelu", "flatten", "dense 5", "prelu"]),
    "elu": ("vector(6)", ["elu 0.7"]),
    "gelu": ("image(3, 4, 4)", ["gelu", "flatten", "dense 5", "gelu"]),
    "silu": ("sequence(4, 3)", ["silu", "flatten", "silu"]),
    "maxout": ("image(6, 3, 3)", ["maxout 3", "flatten", "maxout 2"]),
    "tanh": ("vector(6)", ["tanh"]),
    "sigmoid": ("vector(6)", ["sigmoid"]),
    "softmax": ("image(4, 2, 2)", ["softmax", "flatten", "softmax"]),
    "rnn": ("sequence(5, 3)", ["rnn 4 layers 2 bidirectional return sequence", "rnn 6 layers 2 bidirectional activation relu"]),
    "lstm": ("sequence(5, 3)", ["lstm 4 layers 2 bidirectional return sequence", "lstm 3 layers 2 bidirectional"]),
    "gru": ("sequence(5, 3)", ["gru 4 layers 2 bidirectional return sequence", "gru 3 layers 2 bidirectional"]),
}

# structures beyond single kinds
EXTRA = {
    "residual_identity": ("image(4, 6, 6)", ["residual {", "conv 4 kernel 3 pad 1", "batchnorm", "relu", "}"]),
    "residual_project": ("image(4, 6, 6)", ["residual project {", "conv 8 kernel 3 stride 2 pad 1", "relu", "}",
                                             "residual {", "residual project {", "conv 8 kernel 1", "}", "}"]),
    "residual_project_odd": ("image(4, 7, 9)", ["residual project {", "conv 8 kernel 3 stride 2 pad 1", "}"]),
    "lstm_last_single": ("sequence(6, 2)", ["lstm 5"]),
    "gru_sequence_single": ("sequence(6, 2)", ["gru 5 return sequence", "maxout 5", "layernorm"]),
    "embedding_lstm": ("tokens(7, 20)", ["embedding 6", "lstm 4 bidirectional", "dense 3"]),
}


def spec_text(case) -> str:
    inp, body = case
    lines = "\n".join(f"    {b}" for b in body)
    return f"nnspec 1\nmodel Tiny {{\n    input {inp}\n{lines}\n}}\nloss mse\n"


def randomize(model, seed=0):
    """Random weights and batchnorm statistics, so that no emitter is checked against zeros."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not t.is_floating_point():
                continue
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=gen) + 0.5)
            else:
                t.copy_(torch.randn(t.shape, generator=gen) * 0.5)
    return model.eval()


def nnc_main(*args):
    """`nnc ARGS` in this process (no new interpreter, no second `import torch`): returns an object
    with returncode, stdout and stderr like run_nnc's. An unexpected exception propagates (and
    fails the test) where the real CLI would print a traceback."""
    import contextlib
    import io
    import types

    from nnc.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as e:  # argparse
            code = e.code if isinstance(e.code, int) else 2
    return types.SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())
