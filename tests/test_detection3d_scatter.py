"""The unique + scatter_reduce voxel grouping equals a Python loop over the points."""

import pytest
import torch

from geminifusion.detection3d.scatter import (
    assign_voxels,
    dynamic_scatter,
    dynamic_voxelize,
    gather_from_voxels,
    scatter_to_voxels,
)

pytestmark = pytest.mark.threads(1)  # tiny tensors: pool wake-ups would dominate


def loop_scatter(feats: torch.Tensor, coors: torch.Tensor, reduce: str):
    """Group rows by coordinate tuple in a dict; voxels in sorted tuple order, as MMCV's."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, row in enumerate(coors.tolist()):
        if min(row) >= 0:
            groups.setdefault(tuple(row), []).append(i)
    keys = sorted(groups)
    out = []
    for key in keys:
        rows = feats[groups[key]]
        if reduce == "max":
            out.append(rows.max(dim=0).values)
        elif reduce == "mean":
            out.append(rows.mean(dim=0))
        else:
            out.append(rows.sum(dim=0))
    voxel_feats = torch.stack(out) if out else feats.new_zeros((0, feats.shape[1]))
    voxel_coors = torch.tensor(keys, dtype=coors.dtype).reshape(-1, coors.shape[1])
    per_point = torch.zeros_like(feats[:, : feats.shape[1]])
    for v, key in enumerate(keys):
        per_point[groups[key]] = voxel_feats[v]
    return voxel_feats, voxel_coors, per_point


def random_coors(n: int, seed: int, dropped: float = 0.1) -> torch.Tensor:
    """Random (batch, z, y, x) with a few repeats per voxel and some rows out of range."""
    g = torch.Generator().manual_seed(seed)
    coors = torch.stack(
        [
            torch.randint(0, 3, (n,), generator=g),
            torch.randint(0, 2, (n,), generator=g),
            torch.randint(0, 5, (n,), generator=g),
            torch.randint(0, 7, (n,), generator=g),
        ],
        dim=1,
    ).to(torch.int32)
    out = torch.rand(n, generator=g) < dropped
    coors[out] = -1
    return coors


@pytest.mark.parametrize("reduce", ["max", "mean", "sum"])
@pytest.mark.parametrize("n,seed", [(1, 0), (17, 1), (200, 2), (1000, 3)])
def test_scatter_equals_loop(reduce, n, seed):
    coors = random_coors(n, seed)
    feats = torch.randn(n, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    assignment = assign_voxels(coors)
    want_feats, want_coors, want_points = loop_scatter(feats, coors, reduce)
    got = scatter_to_voxels(feats, assignment, reduce)
    assert assignment.coors.dtype == coors.dtype
    assert torch.equal(assignment.coors, want_coors)
    torch.testing.assert_close(got, want_feats, rtol=0, atol=1e-12)
    torch.testing.assert_close(gather_from_voxels(got, assignment), want_points, rtol=0, atol=1e-12)
    voxel_feats, voxel_coors = dynamic_scatter(feats, coors, reduce)
    assert torch.equal(voxel_feats, got) and torch.equal(voxel_coors, want_coors)


def test_inverse_points_to_own_voxel_and_marks_dropped():
    coors = random_coors(300, 7)
    assignment = assign_voxels(coors)
    valid = (coors >= 0).all(dim=1)
    assert torch.equal(assignment.valid, valid)
    assert torch.equal(assignment.coors[assignment.inverse[valid]], coors[valid])
    assert (assignment.inverse[~valid] == -1).all()


def test_all_points_dropped():
    coors = -torch.ones(4, 4, dtype=torch.int32)
    assignment = assign_voxels(coors)
    feats = torch.randn(4, 3)
    assert scatter_to_voxels(feats, assignment).shape == (0, 3)
    assert torch.equal(
        gather_from_voxels(scatter_to_voxels(feats, assignment), assignment), 0 * feats
    )


def test_max_gradient_reaches_the_maximum():
    coors = torch.tensor([[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1]])
    feats = torch.tensor([[1.0], [3.0], [2.0]], requires_grad=True)
    scatter_to_voxels(feats, assign_voxels(coors), "max").sum().backward()
    assert feats.grad.squeeze(1).tolist() == [0.0, 1.0, 1.0]


def test_dynamic_voxelize_by_hand():
    points = torch.tensor(
        [
            [0.02, -39.99, -2.95, 0.5],  # first voxel
            [70.39, 39.99, 0.99, 0.1],  # last voxel
            [1.23, 4.56, -0.45, 0.0],  # x: 1.23 / 0.05 -> 24, y: 44.56 / 0.05 -> 891, z: 25
            [70.4, 0.0, 0.0, 0.0],  # x on the upper bound: outside
            [-0.1, 0.0, 0.0, 0.0],  # below the range
        ]
    )
    coors = dynamic_voxelize(points, [0.05, 0.05, 0.1], [0, -40, -3, 70.4, 40, 1])
    assert coors.dtype == torch.int32
    assert coors.tolist() == [
        [0, 0, 0],
        [39, 1599, 1407],
        [25, 891, 24],
        [-1, -1, -1],
        [-1, -1, -1],
    ]
