"""The spec's vocabulary beside the layer words: initializers, losses, optimizers, schedules,
preprocessing, augmentation and data sources, one `*Def` record per word in one `Registry`
per kind. torch-free at import (`nnc check` reads them); the functions that build or load
things import torch, numpy or Pillow themselves."""
