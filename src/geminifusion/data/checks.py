"""Checking a whole dataset before training: every file decoded once, every problem listed.

Training would stop at the first bad sample, possibly hours in and inside a worker process;
``check_dataset`` reads every sample up front, collects all problems instead of stopping at the
first, and summarises what the data looks like (sizes, classes present).
"""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from geminifusion.data.datasets import SegmentationDataset
from geminifusion.data.io import DataError
from geminifusion.data.sanity import ignored_warning, layout_warnings
from geminifusion.data.transforms import IGNORE_INDEX


@dataclass
class DataReport:
    """What ``check_dataset`` found. ``ok`` is False when any sample could not be used."""

    dataset: str
    root: str
    split: str
    modalities: tuple[str, ...]
    class_names: tuple[str, ...]
    num_samples: int = 0
    sizes: Counter = field(default_factory=Counter)
    class_pixels: np.ndarray | None = None
    ignored_pixels: int = 0
    out_of_range_pixels: int = 0
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def classes_present(self) -> tuple[str, ...]:
        counts = self.class_pixels if self.class_pixels is not None else ()
        return tuple(n for n, c in zip(self.class_names, counts, strict=False) if c > 0)

    def summary(self, top: int = 5, max_listed: int = 20) -> str:
        """A human-readable report (what ``geminifusion check-data`` prints)."""
        counts = self.class_pixels
        if counts is None:
            counts = np.zeros(len(self.class_names), np.int64)
        total = int(counts.sum()) + self.ignored_pixels + self.out_of_range_pixels
        sizes = ", ".join(f"{h}x{w} ({n})" for (h, w), n in self.sizes.most_common(5))
        if len(self.sizes) > 5:
            sizes += f", ... {len(self.sizes) - 5} more sizes"
        lines = [
            f"dataset   {self.dataset}, split '{self.split}', root {self.root}",
            f"samples   {self.num_samples} (modalities: {', '.join(self.modalities)})",
            f"sizes     {sizes or '-'}",
        ]
        present = self.classes_present
        ignored = 100.0 * self.ignored_pixels / total if total else 0.0
        lines.append(
            f"labels    {len(present)} of {len(self.class_names)} classes present; "
            f"{ignored:.1f}% of pixels ignored (255)"
        )
        if self.out_of_range_pixels:
            share = 100.0 * self.out_of_range_pixels / total
            lines.append(f"          {share:.1f}% of pixels have values >= {len(self.class_names)}")
        labelled = int(counts.sum())
        if labelled:
            order = [k for k in np.argsort(-counts, kind="stable")[:top] if counts[k] > 0]
            shares = [f"{self.class_names[k]} {100.0 * counts[k] / labelled:.1f}%" for k in order]
            lines.append("          most pixels: " + ", ".join(shares))
        absent = [n for n in self.class_names if n not in present]
        if absent and self.num_samples:
            shown = ", ".join(absent[:10]) + (", ..." if len(absent) > 10 else "")
            lines.append(f"          absent: {shown}")
        lines.append(f"problems  {len(self.errors)} errors, {len(self.warnings)} warnings")
        for kind, items in (("error", self.errors), ("warning", self.warnings)):
            for item in items[:max_listed]:
                lines.append(f"  {kind}: {item}")
            if len(items) > max_listed:
                lines.append(f"  ... and {len(items) - max_listed} more {kind}s")
        if not self.ok:
            lines.append(f"result    FAILED ({len(self.errors)} errors)")
        else:
            count = len(self.warnings)
            noted = f" ({count} warning{'s' * (count != 1)}: read them above)" if count else ""
            lines.append(f"result    OK{noted}")
        return "\n".join(lines)


def check_dataset(dataset: SegmentationDataset, progress: bool | None = None) -> DataReport:
    """Read and check every sample of ``dataset`` (without its transforms).

    Args:
        dataset: a built dataset (building it already checked that the listed files exist).
        progress: show a tqdm bar on stderr; None shows it only when stderr is a terminal.

    Returns:
        A ``DataReport``: errors (files that cannot be used, by name), warnings (NYUDv2 label
        values >= 40, constant inputs, samples without labelled pixels) and statistics.
    """
    k = dataset.num_classes
    report = DataReport(
        dataset=dataset.name,
        root=str(dataset.root),
        split=str(dataset.split),
        modalities=dataset.modalities,
        class_names=dataset.class_names,
        num_samples=len(dataset),
        class_pixels=np.zeros(k, np.int64),
    )
    constant: Counter = Counter()
    unlabelled = 0
    show = sys.stderr.isatty() if progress is None else progress
    for index in tqdm(range(len(dataset)), desc="check-data", unit="sample", disable=not show):
        try:
            arrays, label = dataset.load(index)
        except DataError as err:
            report.errors.append(str(err))
            continue
        report.sizes[tuple(label.shape)] += 1
        values = label.ravel()
        in_range = values[values < k]
        report.class_pixels += np.bincount(in_range, minlength=k)[:k]
        ignored = int((values == IGNORE_INDEX).sum())
        report.ignored_pixels += ignored
        odd = values.size - in_range.size - ignored
        if odd:
            report.out_of_range_pixels += odd
            shown = np.unique(values[(values >= k) & (values != IGNORE_INDEX)])[:6].tolist()
            report.warnings.append(
                f"{dataset.samples[index].paths['label']}: {odd} pixel(s) with values {shown} "
                f">= {k} (not classes; treated as ignore, 255)"
            )
        if in_range.size == 0:
            unlabelled += 1
        for m, arr in arrays.items():
            if arr.min() == arr.max():
                constant[m] += 1
    for m, n in constant.items():
        report.warnings.append(
            f"{m} is constant (every pixel equal) in {n} of {len(dataset)} samples; "
            "check the files (and, for depth, depth_format / depth_max_m)"
        )
    if unlabelled:
        report.warnings.append(f"{unlabelled} samples have no labelled pixel (all 255)")
    total = int(report.class_pixels.sum()) + report.ignored_pixels + report.out_of_range_pixels
    layout = layout_warnings(dataset)
    ignored = ignored_warning(dataset, report.ignored_pixels, total)
    report.warnings[:0] = layout + ([ignored] if ignored else [])
    skipped = getattr(dataset, "skipped", ())
    if skipped:
        shown = ", ".join(skipped[:5]) + (", ..." if len(skipped) > 5 else "")
        report.warnings.append(f"{len(skipped)} images without a label were left out: {shown}")
    return report
