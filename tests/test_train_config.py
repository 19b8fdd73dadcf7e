"""Run configs: presets with the paper's numbers, files, ``--set`` overrides and their errors."""

from __future__ import annotations

import json

import pytest

from geminifusion.configs import (
    PRESETS,
    RunConfig,
    apply_overrides,
    from_dict,
    get_preset,
    load_config,
    save_config,
)


def test_presets_cover_the_paper_runs():
    for dataset in ("nyudv2", "sunrgbd"):
        for b in range(6):
            assert f"{dataset}_mit_b{b}" in PRESETS
        for swin in ("tiny", "small", "large", "large_window12"):
            assert f"{dataset}_swin_{swin}" in PRESETS
    for name in PRESETS:
        config = get_preset(name)
        assert config.name == name
        assert config.to_dict() == from_dict(config.to_dict()).to_dict()


def test_paper_recipe_numbers():
    b3 = get_preset("nyudv2_mit_b3")
    # The defaults are the paper's NYUDv2 MiT-B3 recipe; the architecture keys default to the
    # architecture's values and the preset sets the run's drop-path rate.
    assert b3 == RunConfig(drop_path_rate=0.4)
    assert b3.stage_epochs == (100, 100, 100)
    assert b3.stage_lrs == (6e-5, 3e-5, 1.5e-5)
    assert (b3.warmup_iters, b3.max_iters, b3.warmup_ratio, b3.poly_power) == (
        1500,
        40000,
        1e-6,
        1.0,
    )
    assert (b3.weight_decay, b3.betas, b3.eps, b3.decoder_lr_mult) == (
        0.01,
        (0.9, 0.999),
        1e-8,
        10.0,
    )
    assert (b3.crop_size, b3.scale_range, b3.batch_size) == ((480, 640), (0.5, 2.0), 2)
    assert (b3.drop_path_rate, b3.freeze_bn, b3.train_alpha, b3.val_every) == (0.4, True, False, 5)
    assert b3.eval_scales == (1.0,) and not b3.eval_flip
    assert get_preset("nyudv2_mit_b5").drop_path_rate == 0.35
    assert get_preset("nyudv2_swin_tiny").drop_path_rate == 0.2
    assert get_preset("nyudv2_swin_large_window12").drop_path_rate == 0.2
    finetune = get_preset("nyudv2_swin_large_window12_finetune")
    assert (finetune.drop_path_rate, finetune.stage_epochs) == (0.15, (100, 200, 100))
    sun = get_preset("sunrgbd_mit_b3")
    assert (sun.crop_size, sun.val_split, sun.drop_path_rate) == ((480, 480), "test", 0.4)
    assert get_preset("sunrgbd_mit_b5").weight_decay == 0.05


def test_overrides_are_typed_and_checked():
    config = apply_overrides(
        get_preset("synthetic_tiny"),
        [
            "batch_size=4",
            "stage_lrs=[1e-3, 5e-4, 1e-4]",
            "crop_size=[32, 48]",
            "modalities=rgb",
            "arch_overrides.depths=[2, 2, 2, 2]",
            "eval_window=[32, 32]",
            "num_classes=7",
            "pretrained=null",
            "train_alpha=true",
            "weight_decay=0",
        ],
    )
    assert config.batch_size == 4
    assert config.stage_lrs == (1e-3, 5e-4, 1e-4)
    assert config.crop_size == (32, 48)
    assert config.modalities == ("rgb",)
    assert config.arch_overrides["depths"] == [2, 2, 2, 2]
    assert config.arch_overrides["embed_dims"] == [8, 16, 32, 64]  # merged, not replaced
    assert config.eval_window == (32, 32)
    assert config.train_alpha is True
    assert config.weight_decay == 0.0 and isinstance(config.weight_decay, float)


@pytest.mark.parametrize(
    "item, message",
    [
        ("batchsize=4", "unknown config key 'batchsize'; did you mean batch_size"),
        ("batch_size=2.5", "config key 'batch_size' expects int"),
        ("batch_size=0", "'batch_size' must be positive"),
        ("crop_size=[1, 2, 3]", "'crop_size' expects 2 values"),
        ("amp=fp8", "'amp' must be one of"),
        ("train_alpha=maybe", "'train_alpha' expects bool"),
        ("stage_lrs=[1e-4]", "one value per stage"),
        ("batch_size.x=1", "'batch_size' has no sub-keys"),
        ("batch_size", "--set expects key=value"),
    ],
)
def test_bad_overrides_name_the_key(item, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[")):
        apply_overrides(get_preset("synthetic_tiny"), [item])


def test_files_round_trip_and_take_a_preset_as_base(tmp_path):
    config = apply_overrides(get_preset("sunrgbd_mit_b2"), ["data_root=/data/sun", "seed=3"])
    for suffix in ("yaml", "json"):
        path = tmp_path / f"run.{suffix}"
        save_config(config, path)
        assert load_config(path) == config
    partial = tmp_path / "mine.yaml"
    partial.write_text("preset: sunrgbd_mit_b2\nbatch_size: 4\nstage_epochs: [1, 1, 1]\n")
    mine = load_config(partial)
    assert (mine.arch, mine.crop_size, mine.batch_size) == ("mit_b2", (480, 480), 4)
    assert mine.name == "sunrgbd_mit_b2"
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps({"arch": "mit_b0", "dataset": "folder"}))
    assert load_config(bare).name == "bare"


def test_bad_files_and_names(tmp_path):
    with pytest.raises(ValueError, match="unknown preset 'nyudv2_mit_b33'; did you mean"):
        load_config("nyudv2_mit_b33")
    with pytest.raises(FileNotFoundError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("preset: synthetic_tiny\nlearning_rate: 0.1\n")
    with pytest.raises(ValueError, match="unknown config key 'learning_rate'"):
        load_config(bad)
    bad.write_text("- a list\n")
    with pytest.raises(ValueError, match="expected a mapping"):
        load_config(bad)
