"""The paper's own training step as the arbiter: four float64 steps of its ``train()`` loop.

``../shared/reference/train/`` holds what the reference implementation produced from one random
MiT-B0 checkpoint and one batch: losses, learning rates, step-1 gradients and the weights after
the fourth update. Our pieces (``build_optimizer``, ``PolyWarmup``, ``segmentation_loss``,
``freeze_batchnorm``, the model) must reproduce all of it to 1e-8, with and without activation
checkpointing.
"""

from __future__ import annotations

import contextlib

import pytest
import torch

import geminifusion as gf
from geminifusion.engine.losses import segmentation_loss
from geminifusion.engine.schedule import PolyWarmup, build_optimizer
from geminifusion.engine.train import freeze_batchnorm
from geminifusion.testing.plain import plain_autograd
from geminifusion.weights.reference import reference_key_map

TOLERANCE = 1e-8


@pytest.fixture(scope="module")
def fixture(reference_dir):
    folder = reference_dir / "train"
    if not (folder / "mit_b0_steps.pt").is_file():
        pytest.skip(f"training-step fixture not found in {folder}: training step not checked")
    return folder, torch.load(folder / "mit_b0_steps.pt", weights_only=True)


def by_reference_name(model: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> dict:
    """Our tensors (keyed like ``model.state_dict()``) under the reference's names."""
    result = {}
    for key, names in reference_key_map(model).items():
        if key in tensors:
            if len(names) == 1:
                result[names[0]] = tensors[key]
            else:
                result.update((name, tensors[key][i]) for i, name in enumerate(names))
    return result


def run_reference_steps(folder, data, **build) -> dict:
    """Our four steps of the fixture's recipe; what the fixture records, under its names."""
    spec, recipe = data["model"], data["recipe"]
    model = gf.build_segmentor(
        spec["backbone"],
        num_classes=spec["num_classes"],
        drop_path_rate=spec["drop_path_rate"],
        head_dropout=spec["head_dropout"],
        **build,
    )
    gf.load_reference_checkpoint(model, folder / data["init_checkpoint"])
    model.double()
    schedule = PolyWarmup(
        recipe["warmup_iters"], recipe["max_iters"], recipe["warmup_ratio"], recipe["power"]
    )
    optimizer, scheduler = build_optimizer(
        model,
        recipe["lr"],
        weight_decay=recipe["weight_decay"],
        decoder_lr_mult=recipe["decoder_lr_mult"],
        betas=tuple(recipe["betas"]),
        eps=recipe["eps"],
        schedule=schedule,
    )
    names = dict(model.named_parameters())
    ids = {id(p): n for n, p in names.items()}
    groups = {
        g["name"]: list(by_reference_name(model, {ids[id(p)]: p for p in g["params"]}))
        for g in optimizer.param_groups
    }
    result = {
        "groups": groups,
        "group_lr": [g["lr"] / schedule(0) for g in optimizer.param_groups],
        "group_weight_decay": [g["weight_decay"] for g in optimizer.param_groups],
        "losses": [],
        "lrs": [],
    }
    model.train()
    freeze_batchnorm(model)
    inputs = [data["rgb"].double(), data["depth"].double()]
    for step in range(recipe["steps"]):
        loss, parts = segmentation_loss(model(inputs), data["label"], recipe["ignore_index"])
        result["losses"].append(torch.stack(parts))
        result["lrs"].append([g["lr"] for g in optimizer.param_groups])
        optimizer.zero_grad()
        loss.backward()
        if step == 0:
            grads = {n: p.grad.clone() for n, p in names.items() if p.grad is not None}
            result["grads"] = by_reference_name(model, grads)
        optimizer.step()
        scheduler.step()
    result["losses"] = torch.stack(result["losses"])
    result["lrs"] = torch.tensor(result["lrs"], dtype=torch.float64)
    result["final"] = {
        k: v.detach() for k, v in by_reference_name(model, model.state_dict()).items()
    }
    return result


def assert_matches_fixture(folder, data, ours: dict) -> None:
    # The same members (AdamW treats each tensor on its own, so their order does not matter).
    assert {g: sorted(k) for g, k in ours["groups"].items()} == {
        g: sorted(k) for g, k in data["groups"].items()
    }
    torch.testing.assert_close(ours["group_lr"], data["group_lr"], rtol=1e-12, atol=0)
    assert ours["group_weight_decay"] == data["group_weight_decay"]
    close = {"rtol": 0, "atol": TOLERANCE}
    torch.testing.assert_close(ours["lrs"], data["lrs"], rtol=1e-10, atol=0)
    torch.testing.assert_close(ours["losses"], data["losses"], **close)
    torch.testing.assert_close(ours["losses"].sum(1), data["loss_total"], **close)
    for name, grad in data["grads"].items():
        torch.testing.assert_close(ours["grads"][name], grad, **close, msg=name)
    norms = {n: g.norm() for n, g in ours["grads"].items()}
    assert set(norms) == set(data["grad_norms"])
    for name, norm in data["grad_norms"].items():
        torch.testing.assert_close(norms[name], norm.double(), **close, msg=name)
    init = torch.load(folder / data["init_checkpoint"], weights_only=True)["segmenter"]
    for name, delta in data["final_delta"].items():
        expected = init[f"module.{name}"].double() + delta.double()
        torch.testing.assert_close(ours["final"][name], expected, **close, msg=name)


STEPS = {
    "plain": {"lean": False},
    "lean": {},
    "checkpointed": {"activation_checkpointing": True},
}


@pytest.mark.parametrize("step", list(STEPS))
def test_four_steps_match_the_paper(fixture, step):
    folder, data = fixture
    build = dict(STEPS[step])
    with contextlib.nullcontext() if build.pop("lean", True) else plain_autograd():
        ours = run_reference_steps(folder, data, **build)
    assert_matches_fixture(folder, data, ours)


def test_float32_loss_would_be_caught(fixture, monkeypatch):
    """The tolerance is tight enough to see a loss computed in float32 (the old behaviour)."""
    from geminifusion.engine import losses

    folder, data = fixture
    monkeypatch.setattr(losses, "loss_dtype", lambda logits: torch.float32)
    ours = run_reference_steps(folder, data)
    with pytest.raises(AssertionError):
        assert_matches_fixture(folder, data, ours)
