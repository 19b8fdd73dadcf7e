"""Telling a diverging run from a noisy one, and what to tell the user when it diverges.

A loss that is not finite, or that grows past :data:`FACTOR` times the running median of the
recent losses (at least :data:`FLOOR`, so a converged run's tiny losses do not make an ordinary
batch look like a divergence), stops training. The trainer checks every loss before the weights
are updated, and the weights themselves before any checkpoint is written, so a checkpoint never
holds weights from after a divergence began; the message names the last good checkpoint (or
says that there is none) and gives a command that continues from it with a lower rate.
"""

from __future__ import annotations

import math
import shlex
import statistics
from collections import deque
from collections.abc import Iterable
from pathlib import Path

FACTOR = 1e3  # a loss this many times the running median has diverged
FLOOR = 1.0  # the median is taken as at least this much
WINDOW = 100  # losses the median is taken over (kept in the checkpoint, so a resumed run agrees)


class LossWatch:
    """The recent losses of a run, and the verdict on a new one."""

    def __init__(self, history: Iterable[float] = ()) -> None:
        self.history: deque[float] = deque((float(v) for v in history), maxlen=WINDOW)

    def problem(self, loss: float) -> str | None:
        """Why ``loss`` means the run has diverged, or None when it is plausible."""
        if not math.isfinite(loss):
            return f"the loss is {loss}"
        if not self.history:
            return None
        median = statistics.median(self.history)
        if loss > FACTOR * max(median, FLOOR):
            return (
                f"the loss has diverged ({loss:.3g}, more than {FACTOR:g} times its running "
                f"median {median:.3g})"
            )
        return None

    def add(self, loss: float) -> None:
        self.history.append(float(loss))

    def state(self) -> list[float]:
        return list(self.history)


def lower_rates(stage_lrs: Iterable[float], factor: float = 10.0) -> str:
    """``[6e-06,3e-06,1.5e-06]``: the rates divided by ``factor``, as a ``--set`` value."""
    return "[" + ",".join(f"{lr / factor:g}" for lr in stage_lrs) + "]"


def divergence_message(
    problem: str,
    where: str,
    run_dir: Path,
    good: tuple[Path, int] | None,
    stage_lrs: Iterable[float],
    config_file: Path,
) -> str:
    """The error for a diverged run: what happened, the last good checkpoint, what to run.

    Args:
        problem: what :meth:`LossWatch.problem` said.
        where: "at iteration 5 (stage 1, epoch 2); training stopped before updating the
            weights", or the like.
        good: the last good checkpoint and its iteration, or None.
        stage_lrs: the run's rates (the command proposes a tenth of them).
        config_file: the run folder's saved config, which the command reuses.
    """
    rates = lower_rates(stage_lrs)
    base = f"geminifusion train {shlex.quote(str(config_file))} --out {shlex.quote(str(run_dir))}"
    if good is not None:
        path, iteration = good
        own = Path(path) == Path(run_dir) / "checkpoints" / "last.pt"
        resume = "--resume" if own else f"--resume {shlex.quote(str(path))}"
        then = (
            f"The last good checkpoint is {path} (iteration {iteration}): continue from it with "
            f"a lower learning rate (or check the data): {base} {resume} --set stage_lrs={rates}"
        )
    else:
        then = (
            "No checkpoint was written before the loss diverged: start over with a lower "
            f"learning rate (or check the data): {base} --overwrite --set stage_lrs={rates}"
        )
    return f"{problem} {where}. {then}"
