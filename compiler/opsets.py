"""The ONNX opsets nnc emits, apart from compiler/onnx_graph so that the CLI (which every
`nnc check` loads) can name them without importing numpy and onnx."""

DEFAULT_OPSET = 17  # LayerNormalization needs 17; every onnxruntime since 1.14 runs it
MIN_OPSET = 17
