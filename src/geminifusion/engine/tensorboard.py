"""Training curves and validation pictures for TensorBoard (``--set tensorboard=true``).

Written to ``RUN/tb/`` by the main process:

- every iteration: ``train/loss`` (the summed loss), ``train/loss/<output>`` and
  ``train/lr/<parameter group>``;
- every validation: ``val/<aAcc|mIoU|mAcc>/<output>``, ``val/IoU/<class>`` of the main output
  (the ensemble when there is one), and a few validation images: ``val_images/<n>/rgb`` (and
  every other input), ``.../label`` and ``.../prediction`` in the reference palette.

``tensorboard`` is the optional extra ``geminifusion[tensorboard]``; this module imports it only
when a writer is made. Event files are appended as training goes (they are TensorBoard's own
format, not written through the atomic writer); a resumed run drops the events after the
iteration it resumes from, so a curve never shows the interrupted stretch twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from geminifusion.engine.visualize import colorize, image_to_uint8
from geminifusion.extras import require

FOLDER = "tb"
PURPOSE = "--set tensorboard=true"
NUM_IMAGES = 2  # validation samples drawn at each validation


def require_tensorboard() -> None:
    """Raise ``MissingExtraError`` (naming the extra) unless ``tensorboard`` imports."""
    require("tensorboard", PURPOSE)


class TensorBoardLog:
    """The run's TensorBoard writer.

    Args:
        run_dir: the run folder; events go to ``run_dir / "tb"``.
        class_names: names of the classes (per-class IoU tags).
        resume_iter: the iteration a resumed run starts after (None for a fresh run: the
            folder's old event files, from a run that was overwritten, are removed).
    """

    def __init__(
        self, run_dir: str | Path, class_names: Sequence[str], resume_iter: int | None = None
    ) -> None:
        require_tensorboard()
        from torch.utils.tensorboard import SummaryWriter

        self.folder = Path(run_dir) / FOLDER
        if resume_iter is None and self.folder.is_dir():
            for old in self.folder.glob("events.out.tfevents.*"):
                old.unlink()
        purge = resume_iter + 1 if resume_iter is not None else None
        self.writer = SummaryWriter(str(self.folder), purge_step=purge)
        self.class_names = list(class_names)

    def train_step(self, iteration: int, step: dict) -> None:
        """The losses and learning rates of one step (``Trainer.train_step``'s result)."""
        self.writer.add_scalar("train/loss", step["loss"], iteration)
        for name, value in step["losses"].items():
            self.writer.add_scalar(f"train/loss/{name}", value, iteration)
        for group, lr in step["lr"].items():
            self.writer.add_scalar(f"train/lr/{group}", lr, iteration)

    def validation(self, iteration: int, results: dict[str, dict]) -> None:
        """Every output's aAcc / mIoU / mAcc and the main output's per-class IoU."""
        for output, scores in results.items():
            for key in ("aAcc", "mIoU", "mAcc"):
                self.writer.add_scalar(f"val/{key}/{output}", scores[key], iteration)
        main = results[list(results)[-1]]
        for k, iou in enumerate(main["IoU"]):
            name = self.class_names[k] if k < len(self.class_names) else str(k)
            if iou == iou:  # NaN: the class is in neither the labels nor the predictions
                self.writer.add_scalar(f"val/IoU/{name}", iou, iteration)
        self.writer.flush()

    def images(
        self, iteration: int, model: nn.Module, samples: Sequence[dict], device: torch.device
    ) -> None:
        """Inputs, ground truth and the main prediction of a few validation samples."""
        from geminifusion.engine.inference import predict_scores

        was_training = model.training
        model.eval()
        try:
            for n, sample in enumerate(samples):
                inputs = [sample[m][None].to(device) for m in model.modalities]
                label = sample["label"]
                with torch.no_grad():
                    scores = predict_scores(model, inputs, size=label.shape[-2:])
                prediction = scores[-1][0].argmax(0).cpu()
                for m, x in zip(model.modalities, inputs, strict=True):
                    picture = image_to_uint8(x[0].float(), normalized=m == "rgb")
                    self._image(f"val_images/{n}/{m}", picture, iteration)
                self._image(f"val_images/{n}/label", colorize(label), iteration)
                self._image(f"val_images/{n}/prediction", colorize(prediction), iteration)
        finally:
            model.train(was_training)
        self.writer.flush()

    def on_validation(
        self, iteration: int, results: dict[str, dict], model: nn.Module, dataset
    ) -> None:
        """The Trainer's hook: scores, then pictures of the first validation samples."""
        self.validation(iteration, results)
        device = next(model.parameters()).device
        self.images(iteration, model, validation_samples(dataset), device)

    def _image(self, tag: str, picture: np.ndarray, iteration: int) -> None:
        self.writer.add_image(tag, picture, iteration, dataformats="HWC")

    def close(self) -> None:
        self.writer.close()


def validation_samples(dataset, count: int = NUM_IMAGES) -> list[dict]:
    """The first ``count`` samples of a validation set (the same ones at every validation)."""
    return [dataset[i] for i in range(min(count, len(dataset)))]
