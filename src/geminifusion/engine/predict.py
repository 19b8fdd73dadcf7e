"""Predicting a set of samples and writing a class map, a colour map and an overlay for each."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm import tqdm

from geminifusion.data.inputs import read_sample
from geminifusion.engine.inference import predict_scores
from geminifusion.engine.visualize import image_to_uint8, write_prediction
from geminifusion.segmentor import Segmentor


def output_index(model: Segmentor, output: str | None) -> int:
    """Which of the model's outputs to draw: ``output`` by name, default the last (ensemble)."""
    names = list(model.output_names)
    if output is None:
        return len(names) - 1
    if output not in names:
        raise ValueError(f"--output: the model has no output {output!r}; it has {names}")
    return names.index(output)


def predict_folder(
    model: Segmentor,
    samples: Sequence[tuple[str, dict[str, str]]],
    out_dir: str | Path,
    *,
    output: str | None = None,
    depth_format: str = "png8",
    depth_max_m: float = 10.0,
    opacity: float = 0.5,
    progress: bool | None = None,
    **options,
) -> int:
    """Predict every sample (``collect_samples``' pairs) and write its pictures to ``out_dir``.

    ``options`` are :func:`~geminifusion.engine.inference.predict_scores`' test-time options.
    Samples whose names repeat get ``_1``, ``_2`` ... suffixes. Returns how many were written.
    """
    index = output_index(model, output)
    device = model.head.linear_pred.weight.device
    used: dict[str, int] = {}
    quiet = not progress if progress is not None else None
    for stem, files in tqdm(samples, desc="predict", unit="image", disable=quiet):
        count = used.get(stem, 0)
        used[stem] = count + 1
        name = stem if count == 0 else f"{stem}_{count}"
        inputs, rgb = read_sample(files, depth_format, depth_max_m)
        inputs = {k: v.to(device) for k, v in inputs.items()}
        with torch.no_grad():
            scores = predict_scores(model, inputs, **options)
        classes = scores[index][0].argmax(0).cpu()
        background = rgb if rgb is not None else image_to_uint8(inputs[model.modalities[0]][0])
        write_prediction(out_dir, name, classes, background, opacity)
    return len(samples)
