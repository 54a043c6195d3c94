"""What every registry of words shares: the pydantic base of their parameters, and `Registry`,
the one mapping from a spec's word to its record."""

from __future__ import annotations

from typing import Generic, Iterable, Iterator, Mapping, TypeVar

from pydantic import BaseModel, ConfigDict

from nnc.diagnostics import Diagnostic, Span, unknown


class Params(BaseModel):
    """A word's parameters: strict, frozen, unknown keys refused; built on first use."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, defer_build=True)


class NoParams(Params):
    """The parameters of a word that takes none."""


D = TypeVar("D")


class Registry(Mapping[str, D], Generic[D]):
    """The records of one kind of word (`LayerDef`, `LossDef`, ...), keyed by `record.kind`.

    A word defined twice is a bug in nnc and fails at import; a word the spec writes that is
    not here is the user's error, reported by `unknown` with a "did you mean".
    """

    def __init__(self, what: str, *families: Iterable[D]):
        self.what = what
        self._defs: dict[str, D] = {}
        for family in families:
            for d in family:
                if d.kind in self._defs:
                    raise RuntimeError(f"{what} {d.kind!r} is defined twice")
                self._defs[d.kind] = d

    def __getitem__(self, word: str) -> D:
        return self._defs[word]

    def __iter__(self) -> Iterator[str]:
        return iter(self._defs)

    def __len__(self) -> int:
        return len(self._defs)

    def __repr__(self) -> str:
        return f"Registry({self.what!r}: {', '.join(self._defs)})"

    def unknown(self, span: Span | None, word: str, what: str | None = None) -> Diagnostic:
        return unknown(span, what or self.what, word, self._defs)
