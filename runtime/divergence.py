"""The notes' rule for a run gone wrong: "if the cost is ever > 3x the original cost, break out
early". Training stops with exit 3; the doctor's learning-rate sweep uses the same rule."""

from __future__ import annotations

import math

from nnc.diagnostics import EXIT_DIVERGED, NncError

EXPLODE = 3.0


def exploded(loss: float, start: float | None, chance: float = 0.0) -> bool:
    """Is `loss` past the rule, for a run that started at `start`? A fine-tuned model starts far
    below chance, where ordinary noise is 3x its start: the ceiling is at least 3x the chance loss."""
    return not math.isfinite(loss) or loss > EXPLODE * max(start if start is not None else loss, chance, 1e-8)


def diverged(loss: float, start: float | None, where: str, lr: float, last_checkpoint: str) -> NncError:
    """The error (exit 3) that says what went wrong and what to try."""
    if start is None or not math.isfinite(start):  # broken before any update: no lr can be blamed
        return NncError(f"the loss is {loss:.4g} from the first step, before any update: the initial weights "
                        "or the data make it so, not the learning rate; `nnc doctor` checks the loss at init",
                        exit_code=EXIT_DIVERGED)
    return NncError(f"training diverged at {where}: loss {loss:.4g} (it started at {start:.4g}). "
                    f"The learning rate ({lr:g}) is the likely cause; try 3-10x lower. "
                    f"The last good checkpoint is {last_checkpoint}", exit_code=EXIT_DIVERGED)
