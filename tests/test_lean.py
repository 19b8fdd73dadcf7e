"""The lean training step and activation checkpointing give autograd's own gradients.

Every lean piece (the fusion, the LayerNorms, the Mix-FFN, the head's classifier, the loss) is
checked against the same computation with the lean forms off (``plain_autograd``): outputs and
gradients to 1e-10 in float64, at sizes no stride divides, with ignored pixels, dropout and
drop-path on. Each check also counts the bytes autograd keeps, so a lean form that silently
fell back to the plain one would fail.
"""

from __future__ import annotations

import contextlib

import pytest
import torch

import geminifusion as gf
from geminifusion.backbones.mit import EfficientAttention, MixFFN
from geminifusion.backbones.swin import Mlp
from geminifusion.configs import build_model, get_preset
from geminifusion.engine.losses import output_loss, segmentation_loss
from geminifusion.engine.schedule import PolyWarmup, build_optimizer
from geminifusion.engine.train import freeze_batchnorm
from geminifusion.head import SegFormerHead
from geminifusion.layers import ModalityLayerNorm
from geminifusion.testing.plain import plain_autograd, plain_output_loss
from model_helpers import narrow, randomise

pytestmark = pytest.mark.threads(1)
CLOSE = {"rtol": 0, "atol": 1e-10}
SIZE = (33, 47)


def run(fn, inputs: list[torch.Tensor], params: list[torch.Tensor], lean: bool, seed: int = 0):
    """``fn(*inputs)``, its summed-square gradient, and the bytes autograd kept for backward."""
    kept = []

    def pack(t):
        kept.append(t.untyped_storage().nbytes())
        return t

    inputs = [x.detach().requires_grad_(x.is_floating_point()) for x in inputs]
    torch.manual_seed(seed)
    with plain_autograd() if not lean else contextlib.nullcontext():
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = fn(*inputs)
        weights = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view(out.shape)
        wanted = [x for x in [*inputs, *params] if x.requires_grad]
        grads = torch.autograd.grad((out * weights).sum(), wanted)
    return out.detach(), grads, sum(kept)


def label_with_ignored(batch: int, classes: int, size: tuple[int, int]) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    label = torch.randint(0, classes, (batch, *size), generator=gen)
    label[0, : size[0] // 3] = 255  # a padded corner
    label[torch.rand(label.shape, generator=gen) < 0.1] = 255
    return label


def pieces():
    """(name, module or None, forward, inputs) for every lean piece, float64."""
    torch.manual_seed(0)
    d = torch.float64
    norm = ModalityLayerNorm(2, 16).double()
    ffn = MixFFN(16, 64).double()
    mlp = Mlp(16, 64).double()
    attention = EfficientAttention(16, 2, 2, 2, fusion_heads=2).double()
    head = SegFormerHead([8, 16, 24, 32], 5, 16, dropout=0.3).double()
    for module in (norm, ffn, mlp, attention, head):
        randomise(module)
    head.train()
    freeze_batchnorm(head)
    h, w = 9, 12
    strides = {8: 1, 16: 2, 24: 4, 32: 8}  # channels: stride
    features = [torch.randn(4, c, -(-h // s), -(-w // s), dtype=d) for c, s in strides.items()]
    label = label_with_ignored(3, 5, SIZE)
    return [
        ("layernorm", norm, norm, [torch.randn(2, 3, 35, 16, dtype=d)]),
        ("mix_ffn", ffn, lambda x: ffn(x, 5, 7), [torch.randn(2, 3, 35, 16, dtype=d)]),
        ("swin_mlp", mlp, mlp, [torch.randn(2, 3, 35, 16, dtype=d)]),
        ("fusion", attention, lambda x: attention(x, 5, 7), [torch.randn(2, 3, 35, 16, dtype=d)]),
        ("head", head, lambda *f: head(list(f)), features),
        ("loss", None, lambda x, y: output_loss(x, y), [torch.randn(3, 5, 9, 12, dtype=d), label]),
    ]


PIECES = [p[0] for p in pieces()]


@pytest.mark.parametrize("index", range(len(PIECES)), ids=PIECES)
def test_each_lean_piece_equals_plain_autograd_and_keeps_less(index):
    name, module, fn, inputs = pieces()[index]
    params = list(module.parameters()) if module is not None else []
    out, grads, kept = run(fn, inputs, params, lean=True)
    plain_out, plain_grads, plain_kept = run(fn, inputs, params, lean=False)
    torch.testing.assert_close(out, plain_out, **CLOSE)
    assert len(grads) == len(plain_grads) > 0
    for g, p in zip(grads, plain_grads, strict=True):
        torch.testing.assert_close(g, p, **CLOSE)
    assert kept < plain_kept, f"{name}: lean kept {kept} bytes, plain {plain_kept}"


def test_the_loss_is_the_references_batch_mean():
    """One mean over the labelled pixels of the whole batch, as the reference's NLLLoss."""
    logits = torch.randn(3, 5, 9, 12, dtype=torch.float64, requires_grad=True)
    label = label_with_ignored(3, 5, SIZE)
    ours = output_loss(logits, label)
    reference = plain_output_loss(logits, label)
    torch.testing.assert_close(ours, reference, **CLOSE)
    (a,) = torch.autograd.grad(ours, logits)
    (b,) = torch.autograd.grad(reference, logits)
    torch.testing.assert_close(a, b, **CLOSE)
    per_image = torch.stack(
        [plain_output_loss(logits[i : i + 1], label[i : i + 1]) for i in range(3)]
    )
    assert abs(per_image.mean() - ours) > 1e-4  # the counts differ, so the two means do


def test_half_precision_logits_are_computed_in_float32_and_float64_in_float64():
    logits = torch.randn(2, 5, 9, 12)
    label = label_with_ignored(2, 5, SIZE)
    half = logits.bfloat16().requires_grad_()
    loss = output_loss(half, label)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, output_loss(half.detach().float(), label))
    loss.backward()
    assert half.grad.dtype == torch.bfloat16
    assert output_loss(logits.double(), label).dtype == torch.float64


MODELS = ["mit_b0", "swin_tiny", "deliver_mit_b0"]


def narrow_model(name: str, **build) -> gf.Segmentor:
    sensors = ("rgb", "depth", "event", "lidar") if name.startswith("deliver") else ("rgb", "depth")
    torch.manual_seed(0)
    model = gf.build_segmentor(
        narrow(gf.VARIANTS[name]), 5, sensors, drop_path_rate=0.3, head_dropout=0.2, **build
    )
    model = randomise(model).double()
    model.train()
    freeze_batchnorm(model)
    return model


def model_gradients(model: gf.Segmentor, lean: bool) -> tuple[torch.Tensor, dict]:
    gen = torch.Generator().manual_seed(2)
    inputs = [
        torch.randn(2, 3, *SIZE, generator=gen, dtype=torch.float64) for _ in model.modalities
    ]
    label = label_with_ignored(2, 5, SIZE)
    model.zero_grad(set_to_none=True)
    torch.manual_seed(5)  # the same dropout and drop-path draws in every run
    with plain_autograd() if not lean else contextlib.nullcontext():
        loss, _ = segmentation_loss(model(inputs), label)
        loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), grads


@pytest.mark.parametrize("name", MODELS)
def test_a_whole_step_gives_autograds_gradients_lean_and_checkpointed(name):
    model = narrow_model(name)
    plain_loss, plain = model_gradients(model, lean=False)
    lean_loss, lean = model_gradients(model, lean=True)
    model.backbone.activation_checkpointing = True
    checkpointed_loss, checkpointed = model_gradients(model, lean=True)
    for loss, grads in ((lean_loss, lean), (checkpointed_loss, checkpointed)):
        torch.testing.assert_close(loss, plain_loss, **CLOSE)
        assert set(grads) == set(plain)
        for key, grad in plain.items():
            torch.testing.assert_close(grads[key], grad, **CLOSE, msg=key)


def train_steps(model: gf.Segmentor, steps: int = 3) -> dict:
    optimizer, scheduler = build_optimizer(model, 1e-3, schedule=PolyWarmup(0, 100))
    label = label_with_ignored(2, 5, SIZE)
    torch.manual_seed(7)
    for _ in range(steps):
        inputs = [torch.randn(2, 3, *SIZE, dtype=torch.float64) for _ in model.modalities]
        loss, _ = segmentation_loss(model(inputs), label)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_checkpointed_training_gives_the_same_weights_with_drop_path_on():
    plain = train_steps(narrow_model("mit_b0"))
    checkpointed = train_steps(narrow_model("mit_b0", activation_checkpointing=True))
    moved = max((plain[k] - v).abs().max() for k, v in narrow_model("mit_b0").state_dict().items())
    assert moved > 1e-3  # the steps did change the weights
    for key, value in plain.items():
        torch.testing.assert_close(checkpointed[key], value, **CLOSE, msg=key)


def test_checkpointing_under_cpu_autocast_bf16():
    model = narrow_model("mit_b0").float()
    inputs = [torch.randn(2, 3, *SIZE) for _ in model.modalities]
    label = label_with_ignored(2, 5, SIZE)
    grads = []
    for checkpointed in (False, True):
        model.backbone.activation_checkpointing = checkpointed
        model.zero_grad(set_to_none=True)
        torch.manual_seed(5)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            outputs = model(inputs)
        assert outputs[0].dtype == torch.bfloat16
        loss, _ = segmentation_loss(outputs, label)
        loss.backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if p.grad is not None})
    assert set(grads[0]) == set(grads[1])
    for key, grad in grads[0].items():
        assert torch.isfinite(grad).all()
        torch.testing.assert_close(grads[1][key], grad, rtol=1e-5, atol=1e-6, msg=key)


def test_the_option_from_python_and_from_a_run_config():
    assert gf.build_segmentor(
        "mit_b0", 5, activation_checkpointing=True
    ).backbone.activation_checkpointing
    assert not gf.build_segmentor("mit_b0", 5).backbone.activation_checkpointing
    with pytest.raises(ValueError, match="activation_checkpointing must be True or False"):
        gf.build_segmentor("mit_b0", 5, activation_checkpointing="yes")
    config = get_preset("synthetic_tiny").replace(activation_checkpointing=True)
    model = build_model(config, 7)
    assert model.backbone.activation_checkpointing
    assert "activation_checkpointing" not in model.spec  # a training option, not architecture
    with pytest.raises(ValueError, match="activation_checkpointing"):
        get_preset("synthetic_tiny").replace(activation_checkpointing="often")
