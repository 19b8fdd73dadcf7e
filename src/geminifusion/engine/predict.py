"""Predicting a set of samples and writing a class map, a colour map and an overlay for each."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm import tqdm

from geminifusion.data.inputs import read_sample
from geminifusion.engine.inference import predict_scores
from geminifusion.engine.visualize import image_to_uint8, write_prediction
from geminifusion.files import OutputFolder, adopt_complete_sets, check_apart
from geminifusion.segmentor import Segmentor


def output_index(model: Segmentor, output: str | None) -> int:
    """Which of the model's outputs to draw: ``output`` by name, default the last (ensemble)."""
    names = list(model.output_names)
    if output is None:
        return len(names) - 1
    if output not in names:
        raise ValueError(f"--output: the model has no output {output!r}; it has {names}")
    return names.index(output)


PREDICT_KIND = "predict"  # the manifest kind of a prediction folder
OUTPUT_SUFFIXES = ("_classes.png", "_color.png", "_overlay.png")


def open_prediction_folder(out_dir: str | Path, inputs: Sequence[str | Path] = ()) -> OutputFolder:
    """The prediction folder, checked before any work: not one of the ``inputs`` (files or
    folders) nor inside an input folder, and new, empty or an earlier prediction's."""
    check_apart(out_dir, inputs)
    earlier = adopt_complete_sets(OUTPUT_SUFFIXES)
    return OutputFolder.open(
        out_dir, PREDICT_KIND, adopt=earlier, hint="choose a new or empty --out for the predictions"
    )


def unique_names(stems: Sequence[str]) -> list[str]:
    """One output name per sample: a repeated stem gets ``_1``, ``_2`` ..., never a name that
    another sample has as its own stem."""
    reserved, used, names = set(stems), set(), []
    for stem in stems:
        name, count = stem, 0
        while name in used or (name != stem and name in reserved):
            count += 1
            name = f"{stem}_{count}"
        used.add(name)
        names.append(name)
    return names


def predict_folder(
    model: Segmentor,
    samples: Sequence[tuple[str, dict[str, str]]],
    out_dir: str | Path | OutputFolder,
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
    Samples whose names repeat get ``_1``, ``_2`` ... suffixes. The folder is checked and every
    output name claimed before the first prediction (:func:`open_prediction_folder`): an input
    is never overwritten, nor a file geminifusion did not write. Returns how many were written.
    """
    index = output_index(model, output)
    device = model.head.linear_pred.weight.device
    files_in = [f for _, files in samples for f in files.values()]
    if isinstance(out_dir, OutputFolder):
        folder = out_dir
        check_apart(folder.path, files_in)
    else:
        folder = open_prediction_folder(out_dir, files_in)
    names = unique_names([stem for stem, _ in samples])
    folder.claim(*(name + suffix for name in names for suffix in OUTPUT_SUFFIXES))
    quiet = not progress if progress is not None else None
    non_finite = []
    for name, (_, files) in tqdm(
        list(zip(names, samples, strict=True)), desc="predict", unit="image", disable=quiet
    ):
        inputs, rgb = read_sample(files, depth_format, depth_max_m)
        inputs = {k: v.to(device) for k, v in inputs.items()}
        try:
            with torch.no_grad():
                scores = predict_scores(model, inputs, **options)
        except ValueError as err:  # e.g. an image below the model's smallest size
            raise ValueError(f"{next(iter(files.values()))}: {err}") from None
        if not bool(torch.isfinite(scores[index]).all()):
            non_finite.append(name)
        classes = scores[index][0].argmax(0).cpu()
        background = rgb if rgb is not None else image_to_uint8(inputs[model.modalities[0]][0])
        write_prediction(folder.ensure(), name, classes, background, opacity)
    if non_finite:
        warnings.warn(
            f"{len(non_finite)} of {len(samples)} predictions have NaN or infinite scores "
            f"({', '.join(non_finite[:5])}{', ...' if len(non_finite) > 5 else ''}): their "
            "class maps are meaningless; check the model's weights",
            RuntimeWarning,
            stacklevel=2,
        )
    return len(samples)
