"""Tiny specs that use each layer kind, shared by the export and compile tests."""

import torch

# kind -> (input, body lines); every kind of LAYERS must appear here (tests check that)
KINDS = {
    "conv": ("image(3, 9, 9)", ["conv 4 kernel 3 stride 2 pad 1", "conv 6 kernel 3x2 dilation 2 groups 2 bias false"]),
    "conv_transpose": ("image(4, 5, 5)", ["conv_transpose 4 kernel 3 stride 2 pad 1 output_pad 1",
                                          "conv_transpose 6 kernel 2x3 stride 2 dilation 2 groups 2 bias false"]),
    "upsample": ("image(2, 3, 4)", ["upsample 2", "upsample 2x3 mode bilinear"]),
    "maxpool": ("image(2, 9, 9)", ["maxpool 3 stride 2 pad 1", "maxpool 2 ceil"]),
    "avgpool": ("image(2, 9, 9)", ["avgpool 3 stride 2 pad 1", "avgpool 2 ceil"]),
    "global_avgpool": ("image(3, 5, 5)", ["global_avgpool"]),
    "lrn": ("image(7, 4, 4)", ["lrn size 5 alpha 0.1 beta 0.75 k 2", "lrn size 4 alpha 0.2 beta 0.5 k 1"]),
    "batchnorm": ("image(3, 4, 4)", ["batchnorm", "flatten", "batchnorm eps 1e-3"]),
    "layernorm": ("image(3, 4, 4)", ["layernorm", "flatten", "dense 6", "layernorm"]),
    "dense": ("image(2, 3, 3)", ["dense 5", "dense 4 bias false"]),
    "flatten": ("sequence(4, 3)", ["flatten"]),
    "dropout": ("vector(6)", ["dropout 0.5", "dense 3"]),
    "embedding": ("tokens(5, 11)", ["embedding 4", "flatten"]),
    "relu": ("vector(6)", ["relu"]),
    "relu6": ("vector(6)", ["dense 6", "relu6"]),
    "identity": ("image(2, 3, 3)", ["identity", "flatten", "identity"]),
    "concat": ("image(3, 4, 4)", ["conv c 4 kernel 1", "concat {", "conv 2 kernel 1", "branch {", "conv 3 kernel 3 pad 1",
                                  "relu", "}", "identity", "}", "concat with input c", "global_avgpool", "dense d 3", "relu",
                                  "concat with d"]),
    "add": ("image(3, 4, 4)", ["add {", "conv 3 kernel 1", "identity", "}", "add a with input", "flatten",
                               "dense 5", "add {", "dense 5", "dense 5", "}"]),
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

# A block library: the cases below use these definitions.
BLOCKS = """\
block conv_bn(width, kernel=3, stride=1, pad=1, act=true) {
    conv conv width kernel kernel stride stride pad pad bias false
    batchnorm bn eps 1e-3
    if act {
        relu
    }
}
block basic(width, stride=1, down=false) {
    residual project down {
        conv_bn c1 width stride stride
        conv_bn c2 width act false
    }
    relu
}
block inception(a, b, pool) {
    concat {
        conv_bn b1 a kernel 1 pad 0
        branch b2 {
            conv_bn b kernel 1 pad 0
            conv_bn b kernel 3
        }
        branch b3 {
            maxpool 3 stride 1 pad 1
            conv_bn pool kernel 1 pad 0
        }
    }
}
block dense_layer(growth=2) {
    batchnorm
    relu
    conv growth kernel 3 pad 1 bias false
    concat with input
}
block inverted(hidden, out, stride=1, expand=true, skip=false) {
    if expand {
        conv hidden kernel 1 bias false
        batchnorm
        relu6
    }
    conv hidden kernel 3 stride stride pad 1 groups hidden bias false
    batchnorm
    relu6
    conv out kernel 1 bias false
    batchnorm
    if skip {
        add with input
    }
}
"""

# structures beyond single kinds
EXTRA = {
    "residual_identity": ("image(4, 6, 6)", ["residual {", "conv 4 kernel 3 pad 1", "batchnorm", "relu", "}"]),
    "residual_project": ("image(4, 6, 6)", ["residual project {", "conv 8 kernel 3 stride 2 pad 1", "relu", "}",
                                             "residual {", "residual project {", "conv 8 kernel 1", "}", "}"]),
    "residual_project_odd": ("image(4, 7, 9)", ["residual project {", "conv 8 kernel 3 stride 2 pad 1", "}"]),
    "lstm_last_single": ("sequence(6, 2)", ["lstm 5"]),
    "gru_sequence_single": ("sequence(6, 2)", ["gru 5 return sequence", "maxout 5", "layernorm"]),
    "embedding_lstm": ("tokens(7, 20)", ["embedding 6", "lstm 4 bidirectional", "dense 3"]),
    "block_residual": ("image(4, 6, 6)", ["conv_bn stem 4", "basic b1 4", "repeat 2 {", "basic b 8 stride 2 down", "}",
                                          "basic 8 down true"], BLOCKS),
    "block_inception": ("image(3, 7, 7)", ["inception i1 2 3 2", "maxpool 2 stride 2 ceil", "inception 4 2 3"], BLOCKS),
    "block_dense": ("image(3, 5, 5)", ["repeat 3 {", "dense_layer", "}", "dense_layer growth 4"], BLOCKS),
    "block_inverted": ("image(4, 8, 8)", ["inverted 4 6 stride 2 expand false", "inverted 12 6 skip",
                                          "inverted 12 6 skip true"], BLOCKS),
    "unet_skips": ("image(2, 8, 8)", ["conv enc1 4 kernel 3 pad 1", "relu", "maxpool 2", "conv enc2 8 kernel 3 pad 1",
                                      "relu", "maxpool 2", "conv 8 kernel 3 pad 1", "upsample 2", "concat with enc2",
                                      "conv_transpose 4 kernel 2 stride 2", "concat with enc1",
                                      "upsample 2 mode bilinear", "conv 3 kernel 1"]),
    "sequence_merges": ("sequence(5, 3)", ["gru g 4 return sequence", "concat with input", "add {", "identity",
                                           "lstm 7 return sequence", "}", "lstm 3"]),
    "two_inputs": ("image(2, 6, 6)", ["conv 4 kernel 3", "global_avgpool", "concat with meta", "dense 3"], "",
                   "input meta vector(5)"),
    "two_outputs": ("image(2, 6, 6)", ["conv c 4 kernel 3", "global_avgpool", "dense main 3", "output main",
                                       "from c", "flatten", "dense aux 2", "output aux", "from c", "upsample 2",
                                       "conv 3 kernel 1", "output seg"]),
}


def spec_text(case) -> str:
    """(input, body lines[, block definitions[, more input lines]]) -> a spec with loss mse."""
    inp, body, blocks, more = (*case, "", "")[:4]
    lines = "\n".join(f"    {b}" for b in body)
    if more:  # a second input: the first is named too
        inp = f"image {inp}\n    {more}"
    return f"nnspec 1\n{blocks}model Tiny {{\n    input {inp}\n{lines}\n}}\nloss mse\n"


def example(graph, batch=3, seed=0):
    """Random inputs for `graph`'s model: a tensor, or a list for several inputs."""
    gen = torch.Generator().manual_seed(seed)
    xs = []
    for _, inp in graph.inputs:
        if inp.kind == "tokens":
            xs.append(torch.randint(0, inp.vocab, (batch, *inp.dims), generator=gen))
        else:
            xs.append(torch.randn((batch, *inp.dims), generator=gen))
    return xs[0] if len(xs) == 1 else xs


def outputs(y):
    """A model's output as a list of tensors (several outputs come back as a Multi)."""
    return list(y.parts) if hasattr(y, "parts") else [y] if torch.is_tensor(y) else list(y)


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
