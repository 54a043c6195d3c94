"""nnc.grammar: the .nnspec Lark grammar and its Transformer to plain data with spans."""
