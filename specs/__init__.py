"""The spec library, installed with nnc as `nnc.specs` (its .nnspec files are package data):
`nnc specs` lists it, `nnc new NAME --from alexnet` copies one to edit, and a command given a
library name where no such file exists reads the library's spec (compiler/library.py)."""
