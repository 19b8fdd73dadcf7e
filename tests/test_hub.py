"""Model folders (config.json + model.safetensors) and ``geminifusion convert``, both directions."""

from __future__ import annotations

import json

import pytest
import torch

import geminifusion as gf
from geminifusion import cli
from geminifusion.checkpoints import read_checkpoint
from geminifusion.weights.folder import from_pretrained, save_pretrained
from geminifusion.weights.reference import infer_reference_arch

SMALL = gf.MiTConfig(embed_dims=(16, 32, 48, 64), depths=(1, 2, 1, 1), num_heads=(1, 2, 3, 4))


def inputs(seed: int = 0, size: tuple[int, int] = (32, 64)) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(2, 3, *size, generator=gen) for _ in range(2)]


def random_model(arch=SMALL, classes: int = 6, seed: int = 0, **kw) -> gf.Segmentor:
    kw.setdefault("head_embed_dim", 32 if arch is SMALL else 256)
    model = gf.build_segmentor(arch, classes, **kw).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for value in model.state_dict().values():
            if value.is_floating_point():
                value.copy_(torch.rand(value.shape, generator=gen) * 0.8 + 0.6)
    return model


@pytest.fixture
def convert(monkeypatch):
    """``geminifusion convert ...`` through the real entry point, with only this command loaded."""
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("geminifusion.commands.convert",))
    return lambda *argv: cli.main(["convert", *map(str, argv)])


def test_save_and_load_give_identical_outputs(tmp_path):
    model = random_model()
    names = [f"class {i}" for i in range(6)]
    save_pretrained(model, tmp_path / "m", class_names=names)
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [
        "config.json",
        "model.safetensors",
    ]
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["arch"]["type"] == "MiTConfig" and config["arch"]["depths"] == [1, 2, 1, 1]
    assert config["num_classes"] == 6 and config["modalities"] == ["rgb", "depth"]
    assert config["class_names"] == names and config["dtype"] == "float32"

    loaded = gf.from_pretrained(tmp_path / "m")
    assert not loaded.training and loaded.class_names == names
    assert loaded.spec == model.spec
    ours, theirs = model.state_dict(), loaded.state_dict()
    assert list(ours) == list(theirs)
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    with torch.no_grad():
        for a, b in zip(model(inputs()), loaded(inputs()), strict=True):
            assert torch.equal(a, b)


def test_named_variant_float64_and_overwrite(tmp_path):
    model = random_model("mit_b0", classes=3, modalities=("rgb", "hha"))
    save_pretrained(model, tmp_path / "b0")
    save_pretrained(model, tmp_path / "b0")  # replacing is fine and leaves no temporary files
    assert sorted(p.name for p in (tmp_path / "b0").iterdir()) == [
        "config.json",
        "model.safetensors",
    ]
    assert json.loads((tmp_path / "b0" / "config.json").read_text())["arch"] == "mit_b0"
    loaded = from_pretrained(tmp_path / "b0")
    assert loaded.modalities == ("rgb", "hha")
    ours, theirs = model.state_dict(), loaded.state_dict()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)

    model = random_model(seed=5).double()
    save_pretrained(model, tmp_path / "small")
    loaded = from_pretrained(tmp_path / "small")
    assert next(loaded.parameters()).dtype == torch.float64
    x = [t.double() for t in inputs(1)]
    with torch.no_grad():
        assert torch.equal(model(x)[-1], loaded(x)[-1])


def test_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="6 class names for a model of 3 classes"):
        save_pretrained(random_model(classes=3), tmp_path / "a", class_names=["x"] * 6)
    save_pretrained(random_model(), tmp_path / "a")
    config = json.loads((tmp_path / "a" / "config.json").read_text())

    (tmp_path / "a" / "config.json").write_text(json.dumps({**config, "num_classes": 7}))
    with pytest.raises(
        ValueError, match=r"head\.linear_pred\.weight \(6, 32, 1, 1\) != \(7, 32, 1, 1\)"
    ):
        from_pretrained(tmp_path / "a")
    (tmp_path / "a" / "config.json").write_text(json.dumps({**config, "format_version": 99}))
    with pytest.raises(ValueError, match="newer"):
        from_pretrained(tmp_path / "a")
    (tmp_path / "a" / "config.json").write_text(json.dumps({**config, "arch": {"type": "Nope"}}))
    with pytest.raises(ValueError, match="unknown backbone config type 'Nope'"):
        from_pretrained(tmp_path / "a")


def test_convert_reference_checkpoint_and_back(reference_dir, tmp_path, convert):
    source = reference_dir / "mit_b0_nyu.pth"
    assert convert(source, tmp_path / "folder") == 0
    model = gf.from_pretrained(tmp_path / "folder")
    assert model.spec["arch"] == "mit_b0" and model.num_classes == 40
    io = torch.load(reference_dir / "mit_b0_nyu_io.pt", weights_only=True)
    with torch.no_grad():
        for ours, theirs in zip(model([io["rgb"], io["depth"]]), io["outputs"], strict=True):
            torch.testing.assert_close(ours, theirs, rtol=0, atol=2e-5)

    assert convert(tmp_path / "folder", tmp_path / "back.pth") == 0
    original, back = read_checkpoint(source), read_checkpoint(tmp_path / "back.pth")
    assert back["epoch_start"] == original["epoch_start"] == 264
    assert back["best_val"] == original["best_val"]
    a, b = original["segmenter"], back["segmenter"]
    assert sorted(a) == sorted(b)
    for key in a:
        assert a[key].dtype == b[key].dtype and torch.equal(a[key].cpu(), b[key]), key


def test_convert_asks_for_arch_when_no_variant_fits(tmp_path, convert, capsys):
    model = random_model(seed=2)
    reference = dict(gf.to_reference_state_dict(model))
    torch.save(reference, tmp_path / "custom.pth")  # a bare state dict, as the DeLiVER code saves
    assert convert(tmp_path / "custom.pth", tmp_path / "out") == 2
    assert "--arch" in capsys.readouterr().err

    arch = json.dumps(
        {
            "type": "MiTConfig",
            **{k: list(v) for k, v in vars(SMALL).items() if isinstance(v, tuple)},
        }
    )
    assert convert(tmp_path / "custom.pth", tmp_path / "out", "--arch", arch) == 0
    loaded = gf.from_pretrained(tmp_path / "out")
    with torch.no_grad():
        assert torch.equal(model(inputs(2))[0], loaded(inputs(2))[0])
    assert convert(tmp_path / "out", tmp_path / "back.pth") == 0
    back = read_checkpoint(tmp_path / "back.pth")
    assert sorted(back) == sorted(reference)  # the same layout back
    assert all(torch.equal(back[k], reference[k]) for k in reference)

    assert convert(tmp_path / "custom.pth", tmp_path / "out", "--arch", arch) == 2
    assert "--force" in capsys.readouterr().err
    assert convert(tmp_path / "missing.pth", tmp_path / "x") == 2


def test_infer_reference_arch_from_shapes():
    state = gf.to_reference_state_dict(gf.build_segmentor("mit_b0", 13))
    assert infer_reference_arch(state, 2) == "mit_b0"  # not deliver_mit_b0: other key names
    with pytest.raises(ValueError, match="no named variant"):
        infer_reference_arch(gf.to_reference_state_dict(random_model()), 2)
