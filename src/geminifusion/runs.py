"""The run folder: its file names, the rules for resuming and starting over, and the data root.

A training run lives in one folder (``runs/<name>/`` by default)::

    config.yaml           the resolved config (every key, architecture values filled in)
    metrics.jsonl         one JSON record per logged iteration ("train") and per validation ("val")
    train.log             what was printed
    checkpoints/last.pt   everything needed to resume exactly (written atomically)
    checkpoints/best.pt   the weights with the best validation mIoU of the last output

``train``, ``eval``, ``predict`` and ``demo`` all find a run's files through this module. The
folder also holds the manifest of :mod:`geminifusion.files` (``.geminifusion.json``, kind
``train``): training writes only into a new or empty folder or one it wrote itself, and
``--overwrite`` removes only the files that manifest lists.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from geminifusion.configs import RunConfig, from_dict, read_config_file, save_config
from geminifusion.files import OutputFolder, adopt_complete_sets, check_apart, make_folder

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
LOG_FILE = "train.log"
LAST = "checkpoints/last.pt"
BEST = "checkpoints/best.pt"
RUN_FILES = (CONFIG_FILE, METRICS_FILE, LOG_FILE, LAST, BEST)
EVAL_FOLDER = "eval"
DATA_FOLDER = "data"
RUN_KIND = "train"  # the manifest kind of a run folder
EVAL_KIND = "eval"  # the manifest kind of an evaluation results folder

# Keys a resumed run may change: they do not alter what the resumed iterations compute.
RESUME_MAY_CHANGE = frozenset(
    {
        "name",
        "data_root",
        "num_workers",
        "val_batch_size",
        "val_every",
        "log_every",
        "checkpoint_every",
        "device",
        "pretrained",
        "finetune",
        "eval_scales",
        "eval_flip",
        "eval_window",
        "eval_stride",
        # A lower rate after a divergence: applied to the resumed optimiser (see engine.train).
        "stage_lrs",
        "tensorboard",
        "compile",
        "activation_checkpointing",
    }
)


def default_run_dir(config: RunConfig) -> Path:
    return Path("runs") / config.name


def is_run_folder(path: str | Path) -> bool:
    return (Path(path) / CONFIG_FILE).is_file()


def load_run_config(run_dir: str | Path) -> RunConfig:
    """The resolved config saved in a run folder."""
    path = Path(run_dir) / CONFIG_FILE
    try:
        return from_dict(read_config_file(path))
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None


def run_folder_of(checkpoint: str | Path) -> Path | None:
    """The run folder a checkpoint sits in (``<run>/checkpoints/x.pt``), if any."""
    run = Path(checkpoint).resolve().parent.parent
    return run if is_run_folder(run) else None


def default_checkpoint(run_dir: str | Path) -> Path:
    """A run's ``best.pt``, else its ``last.pt``."""
    run_dir = Path(run_dir)
    for name in (BEST, LAST):
        if (run_dir / name).is_file():
            return run_dir / name
    raise FileNotFoundError(f"{run_dir}: no {BEST} or {LAST} (has the run saved a checkpoint?)")


def _config_differences(saved: dict, current: dict) -> list[str]:
    keys = sorted(set(saved) | set(current))
    return [
        f"{k}: {saved.get(k)!r} -> {current.get(k)!r}"
        for k in keys
        if k not in RESUME_MAY_CHANGE and saved.get(k) != current.get(k)
    ]


def _legacy_run_files(folder: Path) -> list[str] | None:
    """The run files of a run folder written before folders carried a manifest.

    Recognised only when a config, a metrics log and a checkpoint are all there: a folder with
    the user's own ``config.yaml`` and ``train.log`` is not a run.
    """
    checkpoint = (folder / LAST).is_file() or (folder / BEST).is_file()
    if (folder / CONFIG_FILE).is_file() and (folder / METRICS_FILE).is_file() and checkpoint:
        return [name for name in RUN_FILES if (folder / name).exists()]
    return None


def open_run_folder(run_dir: str | Path) -> OutputFolder:
    """The run folder as training's own (new, empty, or a run), checked to be writable."""
    return OutputFolder.open(
        run_dir,
        RUN_KIND,
        adopt=_legacy_run_files,
        hint="choose a new or empty --out for the run",
    )


def prepare_run_folder(
    run_dir: Path, config: RunConfig, resume: bool | str, overwrite: bool
) -> str | None:
    """Check and set up the run folder (rank 0); returns the checkpoint to resume from, if any.

    The folder must be new, empty or a run folder (:func:`open_run_folder`). One that already
    holds a run (a metrics log or checkpoints) is refused unless ``resume`` (continue it, with a
    config that computes the same thing) or ``overwrite`` (the files the run wrote are deleted,
    nothing else). A folder left by a start that failed before training is simply reused.
    """
    resume_path: str | None = None
    if isinstance(resume, str):
        resume_path = resume
        if Path(resume).is_dir():
            raise ValueError(
                f"--resume: {resume} is a folder; give a checkpoint file ({Path(resume) / LAST}), "
                "or --resume alone to continue the run in --out"
            )
        if not Path(resume).is_file():
            raise FileNotFoundError(f"--resume: checkpoint not found: {resume}")
    if config.data_root:
        check_apart(run_dir, [config.data_root])  # nothing is ever written into the data
    folder = open_run_folder(run_dir)
    present = [n for n in (METRICS_FILE, LAST, BEST) if folder.owns(n) and (run_dir / n).exists()]
    if present and overwrite and not resume:
        folder.remove(RUN_FILES)
        present = []
    elif present and not resume:
        raise ValueError(
            f"{run_dir} already holds a run ({', '.join(present)}); pass --resume to continue "
            "it or --overwrite to start over"
        )
    if resume and present and (run_dir / CONFIG_FILE).is_file():
        saved = read_config_file(run_dir / CONFIG_FILE)
        changed = _config_differences(saved, config.to_dict())
        if changed:
            raise ValueError(
                f"{run_dir} holds a run with another config; it cannot be resumed with "
                f"these changes:\n  " + "\n  ".join(changed) + "\n(use --overwrite to start over)"
            )
    if resume is True:
        if LAST not in present:
            hint = " (the run stopped before its first checkpoint: start over with --overwrite)"
            raise FileNotFoundError(
                f"--resume: nothing to resume, {run_dir / LAST} does not exist"
                + (hint if METRICS_FILE in present else "")
            )
        resume_path = str(run_dir / LAST)
    names = RUN_FILES
    if config.dataset == "synthetic" and not config.data_root:
        names += (DATA_FOLDER + "/",)
    folder.claim(*names)
    folder.ensure()
    make_folder(run_dir / "checkpoints")
    if not resume:
        (run_dir / LOG_FILE).unlink(missing_ok=True)
    save_config(config, run_dir / CONFIG_FILE)
    return resume_path


def open_results_folder(
    out: str | Path, names: Sequence[str], inputs: Sequence = ()
) -> OutputFolder:
    """The results folder, checked before any work: not inside the ``inputs`` (the data), new,
    empty or an earlier evaluation's, with ``names`` free of files geminifusion did not write."""
    check_apart(out, inputs)
    earlier = adopt_complete_sets((".json", ".txt"), ("eval_", "robustness_"))
    folder = OutputFolder.open(
        out, EVAL_KIND, adopt=earlier, hint="choose a new or empty --out for the results"
    )
    folder.claim(*names)
    return folder


def check_data_root(config: RunConfig) -> None:
    """Fail early, before any folder is touched, when the data cannot be there.

    A synthetic set without a ``data_root`` is generated into the run folder; a ``data_root``
    that does not exist is an error for every dataset (a mistyped path must not silently become
    a new synthetic dataset: ``geminifusion synth DIR`` writes one on purpose).
    """
    if config.dataset == "synthetic" and not config.data_root:
        return
    if not config.data_root:
        raise ValueError(
            f"config key 'data_root' is not set: pass --set data_root=/path/to/{config.dataset}"
        )
    if not Path(config.data_root).exists():
        hint = " (write a synthetic set with `geminifusion synth DIR`)"
        raise FileNotFoundError(
            f"config key 'data_root': {config.data_root} does not exist"
            + (hint if config.dataset == "synthetic" else "")
        )
    if not Path(config.data_root).is_dir():
        raise ValueError(f"config key 'data_root': {config.data_root} is a file, not a folder")


def data_root(
    config: RunConfig,
    generate_in: Path,
    *,
    reuse: Path | None = None,
    folder: OutputFolder | None = None,
) -> Path:
    """The dataset folder of ``config``.

    A synthetic set without a ``data_root`` is read from ``reuse`` when it holds one (the run
    folder's ``data/``, for evaluation), else generated once into ``generate_in`` (claimed in
    ``folder``'s manifest first, when given).
    """
    check_data_root(config)
    if config.data_root:
        return Path(config.data_root)
    if reuse is not None and (reuse / "classes.json").is_file():
        return reuse
    if not (generate_in / "classes.json").is_file():
        from geminifusion.data import generate_synthetic_dataset

        if folder is not None:
            folder.claim(generate_in.relative_to(folder.path).as_posix() + "/")

        generate_synthetic_dataset(
            generate_in,
            num=config.synthetic_num,
            size=tuple(config.synthetic_size),
            seed=config.seed,
            overwrite=True,  # a set cut short earlier: only the files it wrote are replaced
        )
    return generate_in
