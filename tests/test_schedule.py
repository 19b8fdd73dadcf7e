"""The paper's optimiser: parameter groups and the warm-up + poly learning-rate schedule."""

from __future__ import annotations

import warnings

import pytest
import torch

import geminifusion as gf
from geminifusion.checkpoints import reference_key_map
from geminifusion.configs import get_preset
from geminifusion.engine.schedule import (
    PolyWarmup,
    build_optimizer,
    optimizer_from_config,
    parameter_groups,
)

TINY = gf.MiTConfig(
    embed_dims=(8, 16, 32, 64), depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 4), fusion_heads=2
)


def reference_multiplier(t: int, warmup: int, max_iter: int, ratio: float, power: float):
    """The reference rule, written from its definition: None means 'leave the rate alone'."""
    if t < warmup:
        return 1 - (1 - t / warmup) * (1 - ratio)
    if t < max_iter:
        return (1 - t / max_iter) ** power
    return None


def reference_rates(initial: list[float], steps: int, **kw) -> list[list[float]]:
    """Rates each group uses at steps 0..steps-1 under the reference rule (kept past the end)."""
    rates, current = [], list(initial)
    for t in range(steps):
        mult = reference_multiplier(t, **kw)
        if mult is not None:
            current = [lr * mult for lr in initial]
        rates.append(list(current))
    return rates


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)  # tiny tensors: more threads only add overhead


def tiny_model():
    torch.manual_seed(0)
    return gf.build_segmentor(TINY, num_classes=5, head_embed_dim=16)


def test_paper_schedule_at_chosen_iterations_per_group():
    """Warm-up start, end of warm-up, mid-decay, the end, and after it, for the three groups."""
    model = tiny_model()
    optimizer, scheduler = build_optimizer(model, 6e-5, schedule=PolyWarmup(1500, 40000, 1e-6, 1))
    names = [g["name"] for g in optimizer.param_groups]
    assert names == ["encoder", "encoder_norm", "decoder"]
    initial = [6e-5, 6e-5, 6e-5 * 10]  # the reference multiplies the stage rate by 10
    chosen = {0, 1, 750, 1499, 1500, 1501, 20000, 39999, 40000, 40001, 45000}
    expected = reference_rates(
        initial, max(chosen) + 1, warmup=1500, max_iter=40000, ratio=1e-6, power=1.0
    )
    seen = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # stepping the schedule without optimiser steps
        for t in sorted(chosen):
            if t:  # jump: the schedule is a function of the step count alone
                scheduler.last_epoch = t - 1
                scheduler.step()
            seen[t] = [g["lr"] for g in optimizer.param_groups]
    for t in sorted(chosen):
        assert seen[t] == expected[t], t  # same float operations: bit for bit
    assert seen[0] == pytest.approx([6e-11, 6e-11, 6e-10], rel=1e-9)
    assert seen[1500] == pytest.approx([6e-5 * (1 - 1500 / 40000)] * 2 + [6e-4 * 0.9625])
    assert seen[20000] == pytest.approx([3e-5, 3e-5, 3e-4])
    # Past max_iter the reference stops updating: the rate of step 39999 stays.
    assert seen[45000] == seen[40000] == seen[39999]
    assert seen[39999][0] == pytest.approx(6e-5 / 40000)


class PlainPolyWarmupAdamW(torch.optim.AdamW):
    """The reference optimiser's behaviour, written from its definition for comparison."""

    def __init__(self, params, lr, weight_decay, betas, warmup_iter, max_iter, ratio, power):
        super().__init__(params, lr=lr, betas=betas, weight_decay=weight_decay, eps=1e-8)
        self.t, self.kw = 0, dict(warmup=warmup_iter, max_iter=max_iter, ratio=ratio, power=power)
        self.initial = [g["lr"] for g in self.param_groups]

    def step(self, closure=None):
        mult = reference_multiplier(self.t, **self.kw)
        if mult is not None:
            for group, lr in zip(self.param_groups, self.initial, strict=True):
                group["lr"] = lr * mult
        super().step(closure)
        self.t += 1


def test_training_updates_equal_the_reference_optimiser_bit_for_bit():
    a, b = tiny_model(), tiny_model()
    schedule = PolyWarmup(warmup_iters=3, max_iters=7, warmup_ratio=1e-6, power=1.0)
    ours, scheduler = build_optimizer(a, 1e-3, weight_decay=0.01, schedule=schedule)
    groups = parameter_groups(b, 1e-3, 0.01)
    for g in groups:
        g.pop("name")
    theirs = PlainPolyWarmupAdamW(groups, 1e-3, 0.01, (0.9, 0.999), 3, 7, 1e-6, 1.0)
    gen = torch.Generator().manual_seed(0)
    for _ in range(10):  # through warm-up, decay and past max_iter
        grads = [torch.randn(p.shape, generator=gen) for p in a.parameters()]
        for model in (a, b):
            for p, g in zip(model.parameters(), grads, strict=True):
                p.grad = g.clone()
        ours.step()
        scheduler.step()
        theirs.step()
    for (name, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q), name


TINY_SWIN = dict(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8), window_size=7)


@pytest.mark.parametrize("family", ["mit", "swin"])
def test_groups_follow_the_reference_rule(family):
    """Encoder weights decay, encoder norms (reference names containing "norm") do not, the
    decoder runs at 10x, alpha is left out unless asked."""
    torch.manual_seed(0)
    if family == "mit":
        model = tiny_model()
    else:
        model = gf.build_segmentor(gf.SwinConfig(**TINY_SWIN), num_classes=5, head_embed_dim=16)
    groups = {g["name"]: g for g in parameter_groups(model, 1e-4, 0.01)}
    assert set(groups) == {"encoder", "encoder_norm", "decoder"}
    assert (groups["encoder"]["lr"], groups["encoder"]["weight_decay"]) == (1e-4, 0.01)
    assert (groups["encoder_norm"]["lr"], groups["encoder_norm"]["weight_decay"]) == (1e-4, 0.0)
    assert (groups["decoder"]["lr"], groups["decoder"]["weight_decay"]) == (1e-3, 0.01)

    names = {id(p): n for n, p in model.named_parameters()}
    mapping = reference_key_map(model)
    for group in ("encoder", "encoder_norm"):
        for p in groups[group]["params"]:
            reference = mapping[names[id(p)]]
            assert reference[0].startswith("encoder.")
            assert any("norm" in r for r in reference) == (group == "encoder_norm"), reference
    decoder = {names[id(p)] for p in groups["decoder"]["params"]}
    assert decoder == {n for n, _ in model.named_parameters() if n.startswith("head.")}
    grouped = sum(len(g["params"]) for g in groups.values())
    assert grouped == len(list(model.parameters())) - 1  # all but alpha

    with_alpha = {g["name"]: g for g in parameter_groups(model, 1e-4, 0.01, train_alpha=True)}
    assert with_alpha["alpha"]["params"] == [model.alpha]
    assert with_alpha["alpha"]["weight_decay"] == 0.0


def test_each_stage_starts_a_fresh_schedule_at_its_own_rate():
    config = get_preset("nyudv2_mit_b3")
    model = tiny_model()
    for stage, base in enumerate((6e-5, 3e-5, 1.5e-5)):
        optimizer, scheduler = optimizer_from_config(model, config, stage)
        assert scheduler.last_epoch == 0
        rates = [g["lr"] for g in optimizer.param_groups]
        assert rates == pytest.approx([base * 1e-6, base * 1e-6, base * 1e-5])
        assert optimizer.defaults["betas"] == (0.9, 0.999)
        assert optimizer.defaults["eps"] == 1e-8


def test_schedule_state_round_trips():
    model = tiny_model()
    optimizer, scheduler = build_optimizer(model, 1e-3, schedule=PolyWarmup(5, 20))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(7):
            scheduler.step()
    state = scheduler.state_dict()
    optimizer2, scheduler2 = build_optimizer(model, 1e-3, schedule=PolyWarmup(5, 20))
    optimizer2.load_state_dict(optimizer.state_dict())
    scheduler2.load_state_dict(state)
    assert [g["lr"] for g in optimizer2.param_groups] == [g["lr"] for g in optimizer.param_groups]
    assert scheduler2.last_epoch == 7
