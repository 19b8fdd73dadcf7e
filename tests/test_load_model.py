"""``gf.load_model`` on every kind of source, each made here (the paper's fixtures: test_parity)."""

from __future__ import annotations

import os

import pytest
import torch

import geminifusion as gf
from geminifusion.configs import TINY_ARCH, get_preset
from geminifusion.engine.train import train
from geminifusion.weights import reference_to_folder

pytestmark = pytest.mark.threads(1)  # tiny models
TINY = gf.MiTConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in TINY_ARCH.items()})


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("load") / "run"
    train(get_preset("synthetic_tiny"), folder, progress=False)
    return folder


def inputs(model, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(1, 3, 64, 64, generator=gen) for _ in model.modalities]


def same_outputs(a, b) -> bool:
    x = inputs(a)
    with torch.no_grad():
        return all(torch.equal(p, q) for p, q in zip(a(x), b(x), strict=True))


def test_run_folder_and_its_checkpoints(run):
    model = gf.load_model(run)
    assert model.source.kind == "run_folder" and model.source.checkpoint.name == "best.pt"
    assert not model.training and model.modalities == ("rgb", "depth")
    assert model.class_names[0] == "background" and len(model.class_names) == model.num_classes
    assert model.source.details["best"]["mIoU"] is not None
    for name in ("best.pt", "last.pt"):
        other = gf.load_model(run / "checkpoints" / name)
        assert other.source.kind == "training_checkpoint"
        assert other.spec == model.spec
    assert same_outputs(model, gf.load_model(run / "checkpoints" / "best.pt"))


def test_model_folder_round_trip(run, tmp_path):
    model = gf.load_model(run)
    gf.save_pretrained(model, tmp_path / "folder")
    loaded = gf.load_model(tmp_path / "folder")
    assert loaded.source.kind == "model_folder" and loaded.class_names == model.class_names
    assert same_outputs(model, loaded)


def reference_file(model, path, layout: str = "saver") -> None:
    state = {k: v.clone() for k, v in gf.to_reference_state_dict(model).items()}
    if layout == "saver":
        state = {"segmenter": {"module." + k: v for k, v in state.items()}, "epoch_start": 3}
    elif layout == "resume":
        state = {"model_state_dict": state, "epoch": 5, "best_miou": 12.5}
    torch.save(state, path)


@pytest.mark.parametrize("layout", ["saver", "state_dict", "resume"])
def test_paper_checkpoints_in_every_layout(tmp_path, layout):
    arch = "deliver_mit_b0" if layout != "saver" else "mit_b0"
    modalities = ("rgb", "depth", "event", "lidar") if layout != "saver" else ("rgb", "depth")
    torch.manual_seed(1)
    model = gf.build_segmentor(arch, 9, modalities=modalities).eval()
    reference_file(model, tmp_path / "paper.pth", layout)
    loaded = gf.load_model(tmp_path / "paper.pth")
    assert loaded.source.kind == "reference" and loaded.spec["arch"] == arch
    assert loaded.source.details["layout"] == layout
    assert loaded.modalities == modalities and loaded.num_classes == 9
    assert same_outputs(model, loaded)


def test_architecture_recognition_needs_arch_when_shapes_are_ambiguous(tmp_path):
    model = gf.build_segmentor(TINY, 4).eval()
    reference_file(model, tmp_path / "tiny.pth")
    with pytest.raises(ValueError, match="match no named variant"):
        gf.load_model(tmp_path / "tiny.pth")
    loaded = gf.load_model(tmp_path / "tiny.pth", arch=TINY, modalities=("color", "range"))
    assert loaded.modalities == ("color", "range") and same_outputs(model, loaded)
    folder = tmp_path / "converted"
    reference_to_folder(tmp_path / "tiny.pth", folder, arch=TINY)
    assert same_outputs(model, gf.load_model(folder))


def test_what_a_caller_expects_is_checked(run):
    with pytest.raises(ValueError, match=r"takes the inputs \['rgb', 'depth'\], not"):
        gf.load_model(run, modalities=("rgb", "thermal"))
    with pytest.raises(ValueError, match="predicts 7 classes, the model 40"):
        gf.load_model(run, num_classes=40)
    with pytest.raises(ValueError, match="another architecture"):
        gf.load_model(run, arch="mit_b3")


def test_sources_that_are_not_models(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint, model folder or run folder"):
        gf.load_model(tmp_path / "missing")
    (tmp_path / "photos").mkdir()
    with pytest.raises(FileNotFoundError, match="neither a model folder"):
        gf.load_model(tmp_path / "photos")
    (tmp_path / "notes.pt").write_bytes(b"hello")
    with pytest.raises(ValueError, match="not a readable PyTorch checkpoint"):
        gf.load_model(tmp_path / "notes.pt")


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo unsafe",))


def test_a_pickle_that_could_run_code_is_refused_without_torch_advice(tmp_path):
    torch.save({"segmenter": _RunsCode()}, tmp_path / "evil.pt")
    with pytest.raises(ValueError) as err:
        gf.load_model(tmp_path / "evil.pt")
    assert "may contain code" in str(err.value) and "weights_only" not in str(err.value)
