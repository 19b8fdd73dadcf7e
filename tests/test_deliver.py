"""The multi-sensor (DeLiVER) segmentor: reference parity, checkpoint formats, behaviour."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

import geminifusion as gf
from geminifusion.backbones.deliver import DeliverConfig, ScorePredictor
from geminifusion.testing import swap_in_plain_fusion
from model_helpers import randomise

MODALITIES = ("rgb", "depth", "event", "lidar")
EXTRAS = MODALITIES[1:]
TINY = DeliverConfig(embed_dims=(16, 32, 40, 64), depths=(1, 1, 1, 1), num_heads=(1, 2, 5, 8))


def inputs(batch: int = 2, size: tuple[int, int] = (64, 96), count: int = 4, dtype=torch.float32):
    gen = torch.Generator().manual_seed(7)
    return [torch.rand(batch, 3, *size, generator=gen, dtype=dtype) for _ in range(count)]


@pytest.fixture(scope="module")
def reference(reference_dir):
    folder = reference_dir / "deliver"
    model = gf.build_segmentor("deliver_mit_b0", num_classes=25, modalities=MODALITIES).eval()
    meta = gf.load_reference_checkpoint(model, folder / "deliver_mit_b0.pth")
    io = torch.load(folder / "deliver_mit_b0_io.pt", weights_only=True)
    return model, meta, io, folder


@pytest.mark.parametrize(
    ("dtype", "suffix", "score_atol", "merged_atol"),
    [(torch.float32, "", 2e-6, 5e-5), (torch.float64, "_fp64", 1e-9, 1e-9)],
)
def test_merge_internals_match_the_reference(reference, dtype, suffix, score_atol, merged_atol):
    """Score maps and the merged map entering each stage (outputs and features: test_parity)."""
    loaded, _, io, _ = reference
    model = gf.build_segmentor("deliver_mit_b0", 25, MODALITIES).to(dtype).eval()
    state = loaded.state_dict()
    model.load_state_dict(
        {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    )
    x = [io[name].to(dtype) for name in MODALITIES]
    with torch.no_grad():
        trace = model.backbone.trace(model.stack_inputs(x))
        outputs = model(x)
    w = torch.softmax(model.alpha, 0)
    torch.testing.assert_close(outputs[2], w[0] * outputs[0] + w[1] * outputs[1], rtol=0, atol=0)
    for s in range(4):
        for i, name in enumerate(EXTRAS):
            theirs = io["scores" + suffix][s][name]
            torch.testing.assert_close(trace["scores"][s][i], theirs, rtol=0, atol=score_atol)
        theirs = io["merged_in" + suffix][s]
        torch.testing.assert_close(trace["merged_in"][s], theirs, rtol=0, atol=merged_atol)


def test_resume_file_and_ddp_prefix_load(reference, tmp_path):
    model, _, io, folder = reference
    state = torch.load(folder / "deliver_mit_b0.pth", map_location="cpu", weights_only=True)
    params = [torch.nn.Parameter(torch.zeros(3))]
    optimizer = torch.optim.AdamW(params, lr=6e-5)
    params[0].grad = torch.ones(3)
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.PolynomialLR(optimizer, total_iters=10, power=0.9)
    resume = {
        "epoch": 12,
        "model_state_dict": state,
        "optimizer_state_dict": optimizer.state_dict(),
        "loss": 0.75,
        "scheduler_state_dict": scheduler.state_dict(),
        "best_miou": 66.9,
    }
    torch.save(resume, tmp_path / "run_checkpoint.pth")
    fresh = gf.build_segmentor("deliver_mit_b0", 25, MODALITIES).eval()
    meta = gf.load_reference_checkpoint(fresh, tmp_path / "run_checkpoint.pth")
    assert meta == {"epoch": 12, "best_miou": 66.9}
    torch.save({"module." + k: v for k, v in state.items()}, tmp_path / "ddp.pth")
    gf.load_reference_checkpoint(fresh, tmp_path / "ddp.pth")
    x = [io[name] for name in MODALITIES]
    with torch.no_grad():
        assert torch.equal(fresh(x)[2], model(x)[2])


def test_wrong_model_errors_name_the_keys(reference):
    _, _, _, folder = reference
    path = folder / "deliver_mit_b0.pth"
    three = gf.build_segmentor("deliver_mit_b0", 25, MODALITIES[:3])
    with pytest.raises(ValueError, match="unexpected keys") as err:
        gf.load_reference_checkpoint(three, path)
    assert "score_nets.3" in str(err.value) and "(24 in all)" in str(err.value)  # + 8 ln_3
    main_branch = gf.build_segmentor("mit_b0", 25)
    with pytest.raises(ValueError, match="missing keys: decoder.linear_c1") as err:
        gf.load_reference_checkpoint(main_branch, path)
    classes = gf.build_segmentor("deliver_mit_b0", 19, MODALITIES)
    with pytest.raises(ValueError, match="predicts 25 classes, the model 19"):
        gf.load_reference_checkpoint(classes, path)


@pytest.mark.parametrize(
    "config,arch,modalities",
    [
        ("b2_rgbdel", "deliver_mit_b2", MODALITIES),
        ("b2_rgbde", "deliver_mit_b2", MODALITIES[:3]),
        ("b2_rgbd", "deliver_mit_b2", MODALITIES[:2]),
        ("b0_rgbdel", "deliver_mit_b0", MODALITIES),
    ],
)
def test_keys_shapes_and_counts_match_reference(config, arch, modalities, reference_dir):
    keys = json.loads((reference_dir / "deliver" / "deliver_keys.json").read_text())
    official = keys["configs"][config]
    with torch.device("meta"):
        model = gf.build_segmentor(arch, num_classes=official["num_classes"], modalities=modalities)
    ours = gf.to_reference_state_dict(model)
    expected = {key: (tuple(shape), dtype) for key, shape, dtype in official["keys"]}
    got = {key: (tuple(t.shape), str(t.dtype).removeprefix("torch.")) for key, t in ours.items()}
    assert set(got) == set(expected), sorted(set(got) ^ set(expected))[:10]
    assert got == expected
    assert len(ours) == official["num_tensors"]
    assert sum(p.numel() for p in model.parameters()) == official["num_parameters"]
    assert model.head.embed_dim == official["head_embed_dim"] == 512


def test_batched_score_nets_equal_one_net_at_a_time():
    predictor = randomise(ScorePredictor(8, 4)).double()
    tokens = torch.randn(3, 2, 5 * 7, 8, dtype=torch.float64)
    scores = predictor(tokens, 5, 7)
    for e in range(3):
        maps = tokens[e].transpose(1, 2).reshape(2, 8, 5, 7)
        expected = torch.sigmoid(predictor.score_nets[e](maps)).flatten(2).transpose(1, 2)
        torch.testing.assert_close(scores[e], expected, rtol=0, atol=1e-13)


@pytest.mark.parametrize("count", [2, 3, 4])
def test_any_modality_count_forward_backward_odd_size(count):
    names = MODALITIES[:count]
    model = gf.build_segmentor(TINY, num_classes=5, modalities=names)
    outputs = model(inputs(2, (45, 67), count))
    assert [tuple(o.shape) for o in outputs] == [(2, 5, 45, 67)] * 3
    streams = ["rgb", "merged"] if count > 2 else list(names)
    assert model.output_names == [*streams, "ensemble"]
    (outputs[0].sum() + outputs[1].sum()).backward()
    assert model.alpha.grad is None
    norms = model.backbone.patch_embed1.norm
    assert norms.weight.shape[0] == count and norms.weight.grad[count - 1].abs().sum() > 0
    if count > 2:
        nets = model.backbone.extra_score_predictor[0].score_nets
        assert len(nets) == count
        assert all(nets[e][1].weight.grad.abs().sum() > 0 for e in range(count - 1))
        assert nets[count - 1][1].weight.grad is None  # built by the reference, never used
        assert not any(p.requires_grad for p in nets[count - 1].parameters())


def test_two_inputs_is_the_main_branch_backbone():
    deliver = randomise(gf.build_segmentor(TINY, 3, MODALITIES[:2])).eval()
    plain = gf.build_segmentor(gf.MiTConfig(**_mit_fields(TINY)), 3, head_embed_dim=512).eval()
    plain.load_state_dict(deliver.state_dict())
    x = inputs(1, (40, 56), 2)
    with torch.no_grad():
        for a, b in zip(deliver.forward_features(x), plain.forward_features(x), strict=True):
            assert torch.equal(a, b)
        upsampled = torch.nn.functional.interpolate(plain(x)[0], size=(40, 56), mode="bilinear")
        torch.testing.assert_close(deliver(x)[0], upsampled, rtol=0, atol=1e-6)


def _mit_fields(config: DeliverConfig) -> dict:
    fields = dataclasses.asdict(config)
    fields.pop("head_embed_dim")
    return fields


def test_fast_model_equals_plain_fusion_model_in_float64():
    model = randomise(gf.build_segmentor(TINY, 4, MODALITIES)).double().eval()
    x = inputs(2, (33, 45), 4, torch.float64)
    with torch.no_grad():
        fast = model(x)
        plain = swap_in_plain_fusion(model)(x)
    for a, b in zip(fast, plain, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


def test_samples_do_not_interact_and_modality_order_matters():
    model = randomise(gf.build_segmentor(TINY, 4, MODALITIES)).double().eval()
    x = inputs(2, (32, 40), 4, torch.float64)
    with torch.no_grad():
        batched = model(x)[2]
        single = torch.cat([model([t[i : i + 1] for t in x])[2] for i in range(2)])
        swapped = model([x[0], x[2], x[1], x[3]])[2]
    torch.testing.assert_close(batched, single, rtol=0, atol=1e-10)
    assert (swapped - batched).abs().max() > 1e-3


def test_spec_rebuilds_the_model():
    for arch in ("deliver_mit_b0", TINY):
        model = gf.build_segmentor(arch, num_classes=25, modalities=MODALITIES[:3])
        assert model.spec["head_embed_dim"] == 512
        if arch == TINY:
            assert model.spec["arch"]["type"] == "DeliverConfig"
            continue
        rebuilt = gf.build_segmentor(**model.spec)
        assert type(rebuilt.backbone) is type(model.backbone)
        shapes = {k: v.shape for k, v in model.state_dict().items()}
        assert {k: v.shape for k, v in rebuilt.state_dict().items()} == shapes


def test_main_branch_models_keep_their_conventions():
    model = gf.build_segmentor("mit_b0", num_classes=40)
    assert model.head.embed_dim == 256 and model.spec["head_embed_dim"] == 256
    assert not model.backbone.upsample_logits
    assert model.backbone.head_reference_prefix == "decoder."
    with pytest.raises(ValueError, match="multi-sensor"):
        gf.build_segmentor("mit_b0", num_classes=40, modalities=MODALITIES)
    with pytest.raises(ValueError, match="2 or more inputs"):
        gf.build_segmentor("deliver_mit_b0", num_classes=25, modalities=("rgb",))


def test_save_and_from_pretrained_round_trip(reference, tmp_path):
    model, _, io, _ = reference
    gf.save_pretrained(model, tmp_path / "b0")
    loaded = gf.from_pretrained(tmp_path / "b0")
    assert type(loaded.backbone) is type(model.backbone) and loaded.spec == model.spec
    x = [io[name] for name in MODALITIES]
    with torch.no_grad():
        for a, b in zip(model(x), loaded(x), strict=True):
            assert torch.equal(a, b)
    custom = randomise(gf.build_segmentor(TINY, 4, MODALITIES[:3]))
    gf.save_pretrained(custom, tmp_path / "tiny")
    again = gf.from_pretrained(tmp_path / "tiny")
    assert again.backbone.num_modalities == 3 and again.head.embed_dim == 512
    for key, value in custom.state_dict().items():
        assert torch.equal(again.state_dict()[key], value), key


def test_convert_recognises_the_deliver_checkpoint(reference, tmp_path):
    from geminifusion.weights import reference_to_folder

    model, _, _, folder = reference
    converted = reference_to_folder(folder / "deliver_mit_b0.pth", tmp_path / "converted")
    assert converted.spec["arch"] == "deliver_mit_b0"
    assert list(converted.modalities) == list(MODALITIES)
    for key, value in model.state_dict().items():
        assert torch.equal(converted.state_dict()[key], value), key


def test_imagenet_segformer_weights_initialise_every_input(tmp_path):
    from test_pretrained import segformer_imagenet_state

    config = gf.VARIANTS["mit_b0"]
    state = segformer_imagenet_state(config.embed_dims, config.depths, config.sr_ratios)
    torch.save(state, tmp_path / "mit_b0.pth")
    model = gf.build_segmentor("deliver_mit_b0", 25, MODALITIES)
    report = gf.load_pretrained_backbone(model, tmp_path / "mit_b0.pth")
    assert not any("score_nets" in k or ".fusion." in k for k in report.loaded)
    assert all(f"score_nets.{i}" in " ".join(report.initialised) for i in range(4))
    norms = model.state_dict()["backbone.patch_embed2.norm.weight"]
    assert norms.shape[0] == 4 and all(
        torch.equal(r, state["patch_embed2.norm.weight"]) for r in norms
    )


def test_distributed_data_parallel_needs_no_unused_parameter_search():
    import socket

    import torch.distributed as dist

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        model = gf.build_segmentor(TINY, 4, MODALITIES)
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        for _ in range(2):  # the second backward fails if a parameter got no gradient
            sum(o.sum() for o in ddp(inputs(1, (32, 32)))).backward()
    finally:
        dist.destroy_process_group()
