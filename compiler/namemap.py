"""Name maps: how another tool's tensor names become nnc's, for `finetune(from=..., map=...)`.

A map is a text file, one rule per line, `THEIRS -> OURS` (`#` starts a comment): dotted module
paths where `{x}` stands for one part of a name (letters, digits, _) and, on the right, `{x+1}` or
`{x-1}` for one that is a number. `.` alone is the top of the model: `features -> .` drops the
prefix. A rule renames a tensor whose name starts with THEIRS (at a `.`); the rest of the name
(`.weight`, `.running_mean`) is kept. The first rule that matches wins; a name no rule matches is
kept as it is. nnc ships maps for the torchvision layouts of its torchvision-equivalent specs
(compiler/maps/NAME.map, named by `map=NAME`); any other map is a file beside the spec.
Nothing here imports torch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

from nnc.diagnostics import NncError

_PART = re.compile(r"\{([A-Za-z_]\w*)\}")
_OUT = re.compile(r"\{([A-Za-z_]\w*)([+-]\d+)?\}")


@dataclass(frozen=True)
class Rule:
    """One `THEIRS -> OURS` line of a name map."""

    theirs: str
    ours: str
    line: int
    pattern: re.Pattern

    def apply(self, name: str) -> str | None:
        m = self.pattern.match(name)
        if m is None:
            return None
        rest = name[m.end():].lstrip(".")
        try:
            ours = _OUT.sub(lambda k: _value(m.group(k.group(1)), k.group(2)), self.ours)
        except ValueError:
            return None  # `{b+1}` of a part that is not a number: not this rule's name
        return rest if ours == "." else f"{ours}.{rest}" if rest else ours


def _value(text: str, shift: str | None) -> str:
    return str(int(text) + int(shift)) if shift else text


def _compile(theirs: str) -> re.Pattern:
    if theirs == ".":
        return re.compile(r"")
    out = "".join(rf"(?P<{m[1:-1]}>[A-Za-z0-9_]+)" if _PART.fullmatch(m) else re.escape(m)
                  for m in re.split(r"(\{[A-Za-z_]\w*\})", theirs) if m)
    return re.compile(out + r"(?=\.|$)")


def parse(text: str, name: str) -> list[Rule]:
    rules = []
    for n, raw in enumerate(text.split("\n"), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = [p.strip() for p in line.split("->")]
        if len(parts) != 2 or not all(parts) or any(" " in p for p in parts):
            raise NncError(f"{name}:{n}: a name map rule reads `THEIRS -> OURS`, got {raw.strip()!r}")
        theirs, ours = parts
        given = set(_PART.findall(theirs))
        used = {m[0] for m in _OUT.findall(ours)}
        if used - given:
            raise NncError(f"{name}:{n}: {{{sorted(used - given)[0]}}} on the right is not on the left")
        rules.append(Rule(theirs, ours, n, _compile(theirs)))
    return rules


def rename(rules: list[Rule], name: str) -> str:
    for r in rules:
        got = r.apply(name)
        if got is not None:
            return got
    return name


def shipped() -> list[str]:
    """The maps nnc ships, by name (compiler/maps/NAME.map)."""
    return sorted(p.name[:-4] for p in resources.files("nnc.compiler").joinpath("maps").iterdir()
                  if p.name.endswith(".map"))


def load(map_: str, locate) -> list[Rule]:
    """The rules of a shipped map (a name) or of a map file (`locate` finds it beside the spec)."""
    if map_ in shipped():
        text = resources.files("nnc.compiler").joinpath("maps", f"{map_}.map").read_text()
        return parse(text, f"{map_}.map")
    path = locate(map_)
    try:
        with open(path, encoding="utf-8") as f:
            return parse(f.read(), path)
    except OSError as e:
        raise NncError(f"finetune: cannot read the name map {map_!r} ({e.strerror or e}); nnc ships "
                       f"{', '.join(shipped())}") from None
