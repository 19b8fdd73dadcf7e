"""The strict state-dict check: every key used, every shape right, problems named.

Loaders in this package never load partially without saying so. When weights do not fit a
model, the error lists the missing, unexpected and mis-shaped keys by name (a few of each, and
the count), and says so plainly when the reason is another number of classes.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import nn


def name_list(keys: Sequence[str], limit: int = 8) -> str:
    """``a, b, c, ... (40 in all)``: a few names and the count."""
    keys = list(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


def describe_model(model: nn.Module) -> str:
    """``mit_b0, 40 classes, modalities ['rgb', 'depth']``: for error messages."""
    spec = getattr(model, "spec", None) or {}
    arch = spec.get("arch", type(getattr(model, "backbone", model)).__name__)
    arch = arch if isinstance(arch, str) else arch.get("type", "custom")
    return f"{arch}, {model.num_classes} classes, modalities {list(model.modalities)}"


def mismatches(
    expected: Mapping[str, Sequence[int]], given: Mapping[str, torch.Tensor]
) -> list[str]:
    """What keeps ``given`` from fitting ``expected`` (key -> shape), one line per kind."""
    missing = sorted(k for k in expected if k not in given)
    unexpected = sorted(k for k in given if k not in expected)
    shapes = [
        f"{k} {tuple(given[k].shape)} != {tuple(expected[k])}"
        for k in expected
        if k in given and tuple(given[k].shape) != tuple(expected[k])
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {name_list(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {name_list(unexpected)}")
    if shapes:
        problems.append(f"shape mismatches (checkpoint != model): {name_list(shapes, 5)}")
    pred = [k for k in expected if k.endswith("linear_pred.weight") and k in given]
    if pred and given[pred[0]].shape[0] != expected[pred[0]][0]:
        problems.append(
            f"the checkpoint predicts {given[pred[0]].shape[0]} classes, the model "
            f"{expected[pred[0]][0]}"
        )
    return problems


def mismatch_error(source: str, model: nn.Module, problems: Iterable[str]) -> ValueError:
    """The error for weights from ``source`` that do not fit ``model``."""
    lines = "\n  ".join(problems)
    return ValueError(f"{source} does not fit this model ({describe_model(model)}):\n  {lines}")


def load_strict(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """``model.load_state_dict(state, strict=True)``, with the named report when it cannot."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    problems = mismatches(expected, state)
    if problems:
        raise mismatch_error(source, model, problems)
    warn_non_finite(state, source)
    model.load_state_dict(state, strict=True)


def warn_non_finite(state: Mapping[str, torch.Tensor], source: str) -> list[str]:
    """Warn, naming them, about tensors holding NaN or infinity (such a model predicts garbage)."""
    bad = [
        k
        for k, v in state.items()
        if v.is_floating_point() and v.numel() and not bool(torch.isfinite(v).all())
    ]
    if bad:
        warnings.warn(
            f"{source}: {len(bad)} tensor(s) hold NaN or infinite values: {name_list(bad)}; "
            "the model's outputs will not be meaningful",
            RuntimeWarning,
            stacklevel=3,
        )
    return bad
