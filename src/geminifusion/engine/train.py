"""The training loop: the paper's staged recipe, resumable, on one CPU or many GPUs.

``train(config)`` runs every stage of ``config.stage_epochs`` with a fresh AdamW per stage,
BatchNorm statistics frozen, the loss summed over every output, validation every
``config.val_every`` epochs (keeping the checkpoint with the best ensemble mIoU) and a resumable
checkpoint at the end of every epoch. Under ``torchrun`` the same call trains with
DistributedDataParallel; only rank 0 writes files and prints. The run folder's layout and rules
are in :mod:`geminifusion.runs`, the checkpoints' contents in :mod:`geminifusion.weights.training`.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from geminifusion import runs
from geminifusion.configs import RunConfig, build_model
from geminifusion.engine import distributed as D
from geminifusion.engine.divergence import LossWatch, divergence_message
from geminifusion.engine.losses import segmentation_loss
from geminifusion.engine.rng import (
    capture_rng_state,
    process_seed,
    restore_rng_state,
    seed_everything,
)
from geminifusion.engine.schedule import optimizer_from_config
from geminifusion.files import AppendFile, WriteError, check_free_space, write_text
from geminifusion.runs import BEST, CONFIG_FILE, LAST, LOG_FILE, METRICS_FILE
from geminifusion.weights.io import read_checkpoint, save_checkpoint
from geminifusion.weights.load import load_weights
from geminifusion.weights.strict import load_strict
from geminifusion.weights.training import (
    best_checkpoint,
    check_training_checkpoint,
    finetune_state,
    is_training_checkpoint,
    training_checkpoint,
)


class TrainingError(RuntimeError):
    """Training cannot go on (a diverged or NaN loss); the message says why and what to run."""


@dataclass
class TrainResult:
    """What a finished (or stopped) run left behind."""

    run_dir: Path
    iterations: int
    epochs: int
    best: dict = field(default_factory=dict)
    last_val: dict | None = None
    last_checkpoint: Path | None = None
    best_checkpoint: Path | None = None
    finished: bool = True


def freeze_batchnorm(model: nn.Module) -> None:
    """BatchNorm layers to eval mode: running statistics stay fixed, the affine still trains."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


def stage_of_epoch(stage_epochs, epoch: int) -> int:
    """The 0-based stage an epoch belongs to (the last stage for epochs past the end)."""
    end = 0
    for stage, count in enumerate(stage_epochs):
        end += count
        if epoch < end:
            return stage
    return len(stage_epochs) - 1


class Trainer:
    """One run: built from a config, driven by :meth:`run`. Use :func:`train`."""

    def __init__(
        self,
        config: RunConfig,
        ctx: D.DistContext,
        run_dir: Path,
        *,
        resume: bool | str = False,
        overwrite: bool = False,
        progress: bool | None = None,
        stop_after: int | None = None,
    ) -> None:
        config = config.resolved()  # the run folder keeps the architecture's values
        self.config = config
        self.ctx = ctx
        self.run_dir = Path(run_dir)
        self.progress = progress
        self.stop_after = stop_after
        self.device = ctx.device
        self._log_file = None
        self._metrics_file = None
        self._bar = None
        self.watch = LossWatch()
        self._last_batch = None
        self._verified_iter = None
        self._last_good: tuple[Path, int] | None = None
        self.tensorboard = None
        if config.tensorboard:  # a missing extra is reported before the run folder is made
            from geminifusion.engine.tensorboard import require_tensorboard

            require_tensorboard()

        runs.check_data_root(config)
        if config.data_root:  # every data problem is found before the run folder is touched
            self._build_data(config.data_root)
        # So are checkpoints that cannot be read (damaged, or unsafe to unpickle).
        early = [resume] if isinstance(resume, str) else []
        early += [config.finetune] if config.finetune and not resume else []
        self._read = {p: read_checkpoint(p) for p in early if Path(p).is_file()}
        resume_path = D.on_main(
            lambda: runs.prepare_run_folder(self.run_dir, config, resume, overwrite)
        )
        if ctx.is_main:
            self._log_file = AppendFile(self.run_dir / LOG_FILE)
        try:
            self._setup(resume_path)
        except BaseException:
            self.close()
            raise

    def _setup(self, resume_path: str | None) -> None:
        config, ctx = self.config, self.ctx
        if not config.data_root:
            root = D.on_main(lambda: str(runs.data_root(config, self.run_dir / runs.DATA_FOLDER)))
            self._build_data(root)

        seed_everything(config.seed)
        self.model = build_model(config, self.num_classes).to(self.device)
        self.model.class_names = self.class_names or None
        self.checkpoint = None
        self.position = {"stage": 0, "epoch": 0, "batch": 0, "iter": 0}
        self.best = {"mIoU": None, "iter": None, "epoch": None, "output": None}
        if resume_path is not None:
            self._load_resume(resume_path)
        else:
            self._initial_weights()
        if ctx.is_main:  # a disk too small for one checkpoint fails now, not after an epoch
            weights = sum(p.numel() * p.element_size() for p in self.model.parameters())
            check_free_space(self.run_dir / "checkpoints", 3 * weights, "a checkpoint")
        self._open_metrics()
        torch.manual_seed(process_seed(config.seed, ctx.rank))
        if self.checkpoint is not None and self.checkpoint.get("rng"):
            states = self.checkpoint["rng"]
            restore_rng_state(states[ctx.rank % len(states)])

        self.net: nn.Module = self.model
        if ctx.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        if config.compile:
            self.net = torch.compile(self.net)
        if config.tensorboard and ctx.is_main:
            from geminifusion.engine.tensorboard import TensorBoardLog

            resumed = self.position["iter"] if resume_path is not None else None
            self.tensorboard = TensorBoardLog(self.run_dir, self.class_names, resumed)
        self.amp_dtype = self._amp_dtype()
        self.scaler = None
        if self.amp_dtype == torch.float16:
            self.scaler = torch.amp.GradScaler("cuda")
            if self.checkpoint is not None and self.checkpoint.get("grad_scaler"):
                self.scaler.load_state_dict(self.checkpoint["grad_scaler"])

    def _build_data(self, root: str) -> None:
        from geminifusion.data import build_dataset
        from geminifusion.engine.evaluate import build_eval_loader

        c = self.config
        common = {"modalities": c.modalities, "seed": c.seed, **c.dataset_options}
        self.train_set = build_dataset(
            c.dataset,
            root,
            c.train_split,
            train=True,
            crop_size=tuple(c.crop_size),
            scale_range=tuple(c.scale_range),
            **common,
        )
        self.val_set = build_dataset(c.dataset, root, c.val_split, train=False, **common)
        self.num_classes = self.train_set.num_classes
        if self.val_set.num_classes != self.num_classes:
            raise ValueError(
                f"the {c.train_split} split has {self.num_classes} classes but the "
                f"{c.val_split} split {self.val_set.num_classes}"
            )
        if c.num_classes is not None and c.num_classes != self.num_classes:
            raise ValueError(
                f"config key 'num_classes' is {c.num_classes} but the {c.dataset} data at {root} "
                f"has {self.num_classes} classes"
            )
        self.class_names = list(getattr(self.train_set, "class_names", []))
        self.sampler = D.ResumableSampler(
            self.train_set, self.ctx.world_size, self.ctx.rank, shuffle=True, seed=c.seed
        )
        self.iters_per_epoch = self.sampler.num_samples // c.batch_size
        if self.iters_per_epoch < 1:
            raise ValueError(
                f"the training split has {len(self.train_set)} samples: not one batch of "
                f"{c.batch_size} per process over {self.ctx.world_size} processes"
            )
        self.train_loader = DataLoader(
            self.train_set,
            batch_size=c.batch_size,
            sampler=self.sampler,
            num_workers=c.num_workers,
            pin_memory=self.device.type == "cuda",
            drop_last=True,
            # Its own generator: creating an iterator must not draw from the global stream,
            # or a resumed epoch would see other dropout masks than the uninterrupted one.
            generator=torch.Generator().manual_seed(c.seed),
        )
        self.val_loader = build_eval_loader(self.val_set, c.val_batch_size, c.num_workers)

    def _initial_weights(self) -> None:
        c = self.config
        if c.pretrained:
            from geminifusion.weights.pretrained import load_pretrained_backbone

            self.log(str(load_pretrained_backbone(self.model, c.pretrained)))
        elif c.arch.startswith(("mit_", "swin_")) and not c.finetune and c.dataset != "synthetic":
            self.log("note: no --pretrained backbone; the paper starts from ImageNet weights")
        if c.finetune:
            skipped = finetune_state(
                self.model, c.finetune, checkpoint=self._read.pop(c.finetune, None)
            )
            self.log(f"fine-tuning from {c.finetune} (fresh: {', '.join(skipped)})")

    def _load_resume(self, path: str) -> None:
        checkpoint = self._read.pop(path, None) or read_checkpoint(path)
        if is_training_checkpoint(checkpoint):
            check_training_checkpoint(checkpoint, path)
            if "optimizer" not in checkpoint:
                raise ValueError(
                    f"--resume: {path} holds weights only (a best checkpoint); resume from "
                    f"{self.run_dir / LAST}"
                )
            load_strict(self.model, checkpoint["model"], path)
            self.position = dict(checkpoint["position"])
            self.best = dict(checkpoint["best"])
            self.checkpoint = checkpoint
            self.watch = LossWatch(checkpoint.get("loss_history") or ())
            self._last_good = (Path(path), self.position["iter"])
            world = self.position.get("world_size", 1)
            if world != self.ctx.world_size and self.position.get("batch", 0):
                self.log(
                    f"warning: the checkpoint was written by {world} processes, this run has "
                    f"{self.ctx.world_size}: the rest of the epoch sees another data order"
                )
            self.log(
                f"resuming {path}: epoch {self.position['epoch'] + 1}, batch "
                f"{self.position['batch']}, iteration {self.position['iter']}"
            )
        else:
            meta = load_weights(self.model, path, checkpoint)
            # The reference saves the index of the epoch it has just finished.
            epoch = int(meta.get("epoch_start", -1)) + 1
            self.position = {
                "stage": stage_of_epoch(self.config.stage_epochs, epoch),
                "epoch": epoch,
                "batch": 0,
                "iter": epoch * self.iters_per_epoch,
            }
            if meta.get("best_val") is not None:
                self.best = {"mIoU": float(meta["best_val"]), "iter": None, "epoch": epoch}
            self.log(f"resuming the reference checkpoint {path} at epoch {epoch + 1}")

    def _open_metrics(self) -> None:
        if not self.ctx.is_main:
            return
        path = self.run_dir / METRICS_FILE
        if self.checkpoint is not None and path.exists():
            done = self.position["iter"]
            kept = []
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    record = json.loads(line)
                except ValueError:
                    continue  # a line torn by the kill
                if record.get("iter", 0) <= done:
                    kept.append(line)
            write_text(path, "".join(k + "\n" for k in kept))
        self._metrics_file = AppendFile(path)

    def _amp_dtype(self) -> torch.dtype | None:
        dtype = D.autocast_dtype(self.config.amp, self.device)
        if dtype is None and self.config.amp != "none":
            self.log(f"note: amp={self.config.amp} needs CUDA; training in float32 on CPU")
        return dtype

    # ---------------------------------------------------------------- output

    def log(self, message: str) -> None:
        if not self.ctx.is_main:
            return
        if self._bar is not None and not self._bar.disable:
            self._bar.write(message)
        else:
            print(message, flush=True)
        if self._log_file is not None:
            self._log_file.write_line(message)

    def record(self, entry: dict) -> None:
        if self._metrics_file is not None:
            from geminifusion.engine.metrics import to_json_ready

            self._metrics_file.write_line(json.dumps(to_json_ready(entry)))

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()
            self.tensorboard = None
        for f in (self._metrics_file, self._log_file):
            if f is not None:
                f.close()
        self._metrics_file = self._log_file = None

    # ---------------------------------------------------------------- checkpoints

    def save_last(self, optimizer, scheduler) -> Path:
        """The resumable checkpoint (a collective call: every process hands in its RNG state).

        Written only for weights that still give a plausible loss (:meth:`check_weights`).
        """
        self.check_weights()
        rng_states = D.all_gather_objects(capture_rng_state())
        path = self.run_dir / LAST
        if self.ctx.is_main:
            position = {**self.position, "world_size": self.ctx.world_size}
            state = training_checkpoint(
                self.model,
                optimizer,
                scheduler,
                config=self.config.to_dict(),
                position=position,
                best=self.best,
                rng_states=rng_states,
                grad_scaler=self.scaler.state_dict() if self.scaler is not None else None,
            )
            state["loss_history"] = self.watch.state()
            self._write(state, path)
        self._last_good = (path, self.position["iter"])
        return path

    def _write(self, state: dict, path: Path) -> None:
        """``save_checkpoint``; a full disk names the checkpoint that is still there."""
        try:
            save_checkpoint(state, path)
        except WriteError as err:
            if self._last_good is not None:
                where, iteration = self._last_good
                note = (
                    f"the previous checkpoint {where} (iteration {iteration}) is intact: make "
                    "room, then continue with --resume"
                )
            else:
                note = "no checkpoint of this run has been written yet"
            raise WriteError(f"{err}; {note}") from None

    def check_weights(self) -> None:
        """Before a checkpoint: the weights must still give a plausible loss on the last batch.

        One forward pass in eval mode (no dropout, no random numbers drawn), so a checkpoint
        never keeps weights from after a divergence began. A collective call.
        """
        if self._last_batch is None or self._verified_iter == self.position["iter"]:
            return
        c = self.config
        inputs, label = self._last_batch
        modes = {m: m.training for m in self.model.modules()}
        self.model.eval()
        try:
            with torch.no_grad():
                with self._autocast():
                    outputs = self.model(inputs)
                loss, _ = segmentation_loss(outputs, label, c.ignore_index, kind=c.loss)
        finally:
            for module, training in modes.items():
                module.training = training
        value = D.all_reduce_mean(loss.detach().float().reshape(1)).item()
        problem = self.watch.problem(value)
        if problem is not None:
            where = (
                f"for the weights after iteration {self.position['iter']}; their checkpoint "
                "was not written"
            )
            raise TrainingError(self._diverged(problem, where))
        self._verified_iter = self.position["iter"]

    def _diverged(self, problem: str, where: str) -> str:
        good = self._last_good
        if good is not None and not Path(good[0]).is_file():
            good = None
        return divergence_message(
            problem, where, self.run_dir, good, self.config.stage_lrs, self.run_dir / CONFIG_FILE
        )

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type="cuda", dtype=self.amp_dtype)

    def save_best(self, results: dict) -> Path:
        self.check_weights()
        path = self.run_dir / BEST
        if self.ctx.is_main:
            from geminifusion.engine.metrics import to_json_ready

            state = best_checkpoint(
                self.model,
                config=self.config.to_dict(),
                position=self.position,
                best=self.best,
                metrics=json.dumps(to_json_ready(results)),
            )
            self._write(state, path)
        return path

    # ---------------------------------------------------------------- loop

    def _progress_disabled(self) -> bool:
        if not self.ctx.is_main:
            return True
        return not self.progress if self.progress is not None else not sys.stderr.isatty()

    def train_step(self, batch: dict, optimizer, scheduler) -> dict:
        """One optimiser step; returns the process-averaged losses and the rates it used."""
        c = self.config
        inputs = [batch[m].to(self.device, non_blocking=True) for m in c.modalities]
        if c.modality_dropout:
            from geminifusion.engine.robustness import modality_dropout

            inputs = modality_dropout(inputs, c.modalities, c.modality_dropout)
        label = batch["label"].to(self.device, non_blocking=True)
        autocast = (
            torch.autocast(device_type="cuda", dtype=self.amp_dtype)
            if self.amp_dtype is not None
            else contextlib.nullcontext()
        )
        with autocast:
            outputs = self.net(inputs)
        loss, parts = segmentation_loss(outputs, label, c.ignore_index, kind=c.loss)
        values = D.all_reduce_mean(torch.stack([loss.detach(), *parts]).float())
        values = values.tolist()
        problem = self.watch.problem(values[0])
        if problem is None and not all(math.isfinite(v) for v in values):
            problem = f"the loss of an output is {[v for v in values if not math.isfinite(v)][0]}"
        if problem is not None:
            where = (
                f"at iteration {self.position['iter'] + 1} (stage {self.position['stage'] + 1}, "
                f"epoch {self.position['epoch'] + 1}); training stopped before updating the weights"
            )
            raise TrainingError(self._diverged(problem, where))
        self.watch.add(values[0])
        self._last_batch = (inputs, label)
        lrs = {g.get("name", str(i)): g["lr"] for i, g in enumerate(optimizer.param_groups)}
        self.net.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            loss.backward()
            optimizer.step()
        scheduler.step()
        names = self.model.output_names
        return {"loss": values[0], "losses": dict(zip(names, values[1:], strict=True)), "lr": lrs}

    def validate(self, epoch: int) -> dict:
        from geminifusion.engine.evaluate import evaluate

        c = self.config
        results = evaluate(
            self.model,
            self.val_loader,
            self.num_classes,
            self.device,
            scales=tuple(c.eval_scales),
            flip=c.eval_flip,
            window=c.eval_window,
            stride=c.eval_stride,
            autocast_dtype=self.amp_dtype,
            progress=None if self.progress is None else self.progress,
            desc=f"val {epoch + 1}",
        )
        return results

    def run(self) -> TrainResult:
        c = self.config
        total = c.total_epochs
        start_epoch = self.position["epoch"]
        resume_stage = self.position.get("stage", 0)
        pending = self.checkpoint if self.checkpoint is not None else None
        optimizer = scheduler = None
        opt_stage = None
        last_val = None
        last_path = None
        self.log(
            f"run {self.run_dir}: {c.arch} on {c.dataset} ({len(self.train_set)} train / "
            f"{len(self.val_set)} val images, {self.num_classes} classes), modalities "
            f"{', '.join(c.modalities)}, {self.ctx.world_size} process(es) on {self.device}, "
            f"{self.iters_per_epoch} iterations per epoch"
        )
        if start_epoch >= total:
            self.log("the run has already finished all its epochs")
        for epoch in range(start_epoch, total):
            stage = stage_of_epoch(c.stage_epochs, epoch)
            if stage != opt_stage:
                optimizer, scheduler = optimizer_from_config(self.model, c, stage)
                opt_stage = stage
                if pending is not None and resume_stage == stage and "optimizer" in pending:
                    optimizer.load_state_dict(pending["optimizer"])
                    scheduler.load_state_dict(pending["scheduler"])
                    self._apply_new_rate(pending, stage, optimizer, scheduler)
                pending = None
                groups = ", ".join(
                    f"{g.get('name')} {len(g['params'])}" for g in optimizer.param_groups
                )
                self.log(
                    f"stage {stage + 1}/{len(c.stage_epochs)}: base lr {c.stage_lrs[stage]:g}, "
                    f"parameter groups: {groups}"
                )
            self.position["stage"] = stage
            self.position["epoch"] = epoch
            skip = self.position["batch"] if epoch == start_epoch else 0
            self.position["batch"] = skip
            stopped = self._train_epoch(epoch, skip, optimizer, scheduler)
            if stopped:
                return self._result(last_val, last_path, finished=False)
            self.position.update(epoch=epoch + 1, batch=0)
            if (epoch + 1) % c.val_every == 0 or epoch + 1 == total:
                last_val = self._validate_and_keep_best(epoch)
            last_path = self.save_last(optimizer, scheduler)
        D.barrier()
        self.log(self._summary())
        return self._result(last_val, last_path or self.run_dir / LAST, finished=True)

    def _apply_new_rate(self, checkpoint: dict, stage: int, optimizer, scheduler) -> None:
        """A resumed run may lower (or raise) its stage rates: scale the restored schedule."""
        saved = (checkpoint.get("config") or {}).get("stage_lrs")
        if not saved or len(saved) <= stage or saved[stage] == self.config.stage_lrs[stage]:
            return
        ratio = self.config.stage_lrs[stage] / saved[stage]
        for group in optimizer.param_groups:
            group["lr"] *= ratio
            if "initial_lr" in group:
                group["initial_lr"] *= ratio
        scheduler.base_lrs = [lr * ratio for lr in scheduler.base_lrs]
        scheduler._last_lr = [g["lr"] for g in optimizer.param_groups]
        self.log(
            f"stage {stage + 1}: base learning rate {self.config.stage_lrs[stage]:g} instead of "
            f"the checkpoint's {saved[stage]:g}"
        )

    def _train_epoch(self, epoch: int, skip: int, optimizer, scheduler) -> bool:
        """Train one epoch from batch ``skip``; True when ``stop_after`` ended the run early."""
        c = self.config
        self.sampler.set_epoch(epoch)
        self.sampler.set_start(skip * c.batch_size)
        if hasattr(self.train_set, "set_epoch"):
            self.train_set.set_epoch(epoch)
        self.net.train()
        if c.freeze_bn:
            freeze_batchnorm(self.net)
        self._bar = tqdm(
            total=self.iters_per_epoch,
            initial=skip,
            desc=f"epoch {epoch + 1}/{c.total_epochs}",
            unit="it",
            disable=self._progress_disabled(),
            dynamic_ncols=True,
        )
        try:
            tick = time.perf_counter()
            for batch in self.train_loader:
                step = self.train_step(batch, optimizer, scheduler)
                self.position["batch"] += 1
                self.position["iter"] += 1
                it = self.position["iter"]
                if self.tensorboard is not None:
                    self.tensorboard.train_step(it, step)
                now = time.perf_counter()
                if it % c.log_every == 0 or self.position["batch"] == self.iters_per_epoch:
                    self.record(
                        {
                            "type": "train",
                            "iter": it,
                            "stage": self.position["stage"],
                            "epoch": epoch,
                            "batch": self.position["batch"],
                            **step,
                            "time": now - tick,
                        }
                    )
                tick = now
                self._bar.update(1)
                self._bar.set_postfix(loss=f"{step['loss']:.4f}", refresh=False)
                mid_epoch = self.position["batch"] < self.iters_per_epoch
                if c.checkpoint_every and it % c.checkpoint_every == 0 and mid_epoch:
                    self.save_last(optimizer, scheduler)
                if self.stop_after is not None and it >= self.stop_after:
                    return True
        finally:
            self._bar.close()
            self._bar = None
        return False

    def _validate_and_keep_best(self, epoch: int) -> dict:
        results = self.validate(epoch)
        if self.tensorboard is not None:
            self.tensorboard.on_validation(self.position["iter"], results, self.model, self.val_set)
        main = list(results)[-1]
        miou = results[main]["mIoU"]
        improved = self.best.get("mIoU") is None or miou > self.best["mIoU"]
        if improved:
            self.best = {
                "mIoU": miou,
                "iter": self.position["iter"],
                "epoch": epoch,
                "output": main,
            }
            self.save_best(results)
        summary = {name: {k: r[k] for k in ("aAcc", "mIoU", "mAcc")} for name, r in results.items()}
        self.record(
            {
                "type": "val",
                "iter": self.position["iter"],
                "epoch": epoch,
                "stage": self.position["stage"],
                "metrics": summary,
                "IoU": results[main]["IoU"],
                "best": improved,
                "best_mIoU": self.best["mIoU"],
            }
        )
        scores = "  ".join(f"{name} {r['mIoU']:.2f}" for name, r in results.items())
        self.log(f"epoch {epoch + 1} validation mIoU: {scores}" + ("  (best)" if improved else ""))
        return results

    def _summary(self) -> str:
        best = self.best
        if best.get("mIoU") is None:
            return f"finished: {self.position['iter']} iterations"
        where = f" at epoch {best['epoch'] + 1}" if best.get("epoch") is not None else ""
        return (
            f"finished: {self.position['iter']} iterations; best {best.get('output')} mIoU "
            f"{best['mIoU']:.2f}{where}"
        )

    def _result(self, last_val: dict | None, last_path: Path | None, finished: bool) -> TrainResult:
        best_path = self.run_dir / BEST
        return TrainResult(
            run_dir=self.run_dir,
            iterations=self.position["iter"],
            epochs=self.position["epoch"],
            best=dict(self.best),
            last_val=last_val,
            last_checkpoint=last_path,
            best_checkpoint=best_path if best_path.exists() else None,
            finished=finished,
        )


def train(
    config: RunConfig,
    out_dir: str | Path | None = None,
    *,
    resume: bool | str = False,
    overwrite: bool = False,
    progress: bool | None = None,
    stop_after: int | None = None,
) -> TrainResult:
    """Train a model as ``config`` says; under ``torchrun``, with DistributedDataParallel.

    Args:
        config: the run (see :class:`geminifusion.configs.RunConfig`).
        out_dir: run folder; default ``runs/<config.name>``.
        resume: True continues the run in ``out_dir`` from ``checkpoints/last.pt``; a path
            resumes from that checkpoint (ours, exactly; a reference one, at its epoch).
        overwrite: delete the run files already in ``out_dir`` and start over.
        progress: progress bars (None: only on a terminal).
        stop_after: stop after this many iterations in all (to simulate an interruption).

    Raises:
        ValueError, FileNotFoundError: bad config, data or folder (the message says which).
        TrainingError: the loss became NaN or infinite.
    """
    run_dir = Path(out_dir) if out_dir is not None else runs.default_run_dir(config)
    own_group = not D.is_initialized()
    ctx = D.setup_distributed(config.device)
    trainer = None
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*pin_memory.*")
            # DDP compares strides of size-1 dimensions too (depth-wise convolutions): harmless.
            warnings.filterwarnings("ignore", message="Grad strides do not match bucket view")
            trainer = Trainer(
                config,
                ctx,
                run_dir,
                resume=resume,
                overwrite=overwrite,
                progress=progress,
                stop_after=stop_after,
            )
            return trainer.run()
    finally:
        if trainer is not None:
            trainer.close()
            trainer = None  # DDP's reducer goes while its process group still exists
        if own_group:
            D.cleanup_distributed()


__all__ = [
    "TrainResult",
    "Trainer",
    "TrainingError",
    "freeze_batchnorm",
    "train",
]
