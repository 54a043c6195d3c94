"""nnc.runtime: data, preprocessing, training, checkpoints, monitors and inference."""
