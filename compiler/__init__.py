"""nnc.compiler: spec validation, shape inference and the PyTorch / ONNX / source back ends."""
