"""Projection and sampling on a hand-made camera whose pixels are worked out by hand."""

import math

import pytest
import torch

from geminifusion.detection3d.projection import (
    augment_pixels,
    inside_image,
    point_pixels,
    project_points,
    projection_matrix,
    sample_features,
    undo_3d_augmentation,
)

F64 = torch.float64
# Focal 100 px, principal point (64, 32); the camera sits at (0.5, 0.2, -0.1) in the LiDAR frame
# (x forward, y left, z up) and looks along x: camera x = -lidar y, camera y = -lidar z.
K = torch.tensor([[100.0, 0, 64], [0, 100, 32], [0, 0, 1]], dtype=F64)
R = torch.tensor([[0.0, -1, 0], [0, 0, -1], [1, 0, 0]], dtype=F64)
CAMERA = torch.tensor([0.5, 0.2, -0.1], dtype=F64)


pytestmark = pytest.mark.threads(1)  # tiny tensors: pool wake-ups would dominate


def lidar2img() -> torch.Tensor:
    extrinsic = torch.eye(4, dtype=F64)
    extrinsic[:3, :3] = R
    extrinsic[:3, 3] = -R @ CAMERA
    intrinsic = torch.eye(4, dtype=F64)
    intrinsic[:3, :3] = K
    return intrinsic @ extrinsic


# (LiDAR point, expected pixel, depth), by hand: with (dx, dy, dz) the offset from the camera,
# u = 64 + 100 * (-dy) / dx and v = 32 + 100 * (-dz) / dx.
HAND = [
    ((10.5, 0.2, -0.1), (64.0, 32.0), 10.0),
    ((10.5, -0.8, -0.1), (74.0, 32.0), 10.0),
    ((5.5, 0.2, 0.4), (64.0, 22.0), 5.0),
    ((20.5, 2.2, -2.1), (54.0, 42.0), 20.0),
    ((-3.5, 0.2, -0.1), (64.0, 32.0), -4.0),  # behind the camera: mirrored through the centre
]


def hand_points():
    pts = torch.tensor([p for p, _, _ in HAND], dtype=F64)
    pixels = torch.tensor([q for _, q, _ in HAND], dtype=F64)
    depth = torch.tensor([d for _, _, d in HAND], dtype=F64)
    return pts, pixels, depth


def test_projection_matches_hand_pixels():
    pts, pixels, depth = hand_points()
    got, got_depth = project_points(pts, lidar2img())
    torch.testing.assert_close(got, pixels, rtol=0, atol=1e-12)
    torch.testing.assert_close(got_depth, depth, rtol=0, atol=1e-12)


def test_3x3_and_3x4_matrices_are_padded():
    pts, pixels, _ = hand_points()
    p34 = lidar2img()[:3]
    got = point_pixels(pts, {"lidar2img": p34.tolist()})[0]
    torch.testing.assert_close(got, pixels, rtol=0, atol=1e-12)
    # cam2img for CAMERA points: the intrinsics alone, applied to camera-frame points.
    cam = (pts - CAMERA) @ R.T
    got = point_pixels(cam, {"cam2img": K.numpy()}, coord_type="camera")[0]
    torch.testing.assert_close(got, pixels, rtol=0, atol=1e-12)
    with pytest.raises(KeyError, match="lidar2img"):
        point_pixels(pts, {"cam2img": K})


def test_image_augmentation_scale_crop_flip_by_hand():
    pixels = torch.tensor([[74.0, 32.0], [54.0, 42.0]], dtype=F64)
    meta = {"scale_factor": (0.5, 0.25), "img_crop_offset": (3, 2), "flip": True}
    meta["img_shape"] = (16, 64)
    # scale: (37, 8), (27, 10.5); crop: (34, 6), (24, 8.5); flip about w=64: (30, 6), (40, 8.5)
    expected = torch.tensor([[30.0, 6.0], [40.0, 8.5]], dtype=F64)
    torch.testing.assert_close(augment_pixels(pixels, meta), expected, rtol=0, atol=1e-12)
    vertical = dict(meta, flip_direction="vertical")
    expected = torch.tensor([[34.0, 10.0], [24.0, 7.5]], dtype=F64)
    torch.testing.assert_close(augment_pixels(pixels, vertical), expected, rtol=0, atol=1e-12)
    scalar = {"scale_factor": 2.0}
    torch.testing.assert_close(augment_pixels(pixels, scalar), 2 * pixels, rtol=0, atol=0)


def augment_3d(xyz: torch.Tensor, meta: dict, flip_axes: tuple[int, int]) -> torch.Tensor:
    """The forward augmentations, as MMDetection3D's pipeline applies them."""
    for op in meta["transformation_3d_flow"]:
        if op == "R":
            xyz = xyz @ torch.as_tensor(meta["pcd_rotation"], dtype=F64)
        elif op == "S":
            xyz = xyz * meta["pcd_scale_factor"]
        elif op == "T":
            xyz = xyz + torch.as_tensor(meta["pcd_trans"], dtype=F64)
        elif op in ("HF", "VF") and meta[f"pcd_{'horizontal' if op == 'HF' else 'vertical'}_flip"]:
            xyz = xyz.clone()
            xyz[:, flip_axes[op == "VF"]] *= -1
    return xyz


@pytest.mark.parametrize(
    "coord_type,flip_axes", [("LIDAR", (1, 0)), ("DEPTH", (0, 1)), ("CAMERA", (0, 2))]
)
def test_3d_augmentations_are_undone(coord_type, flip_axes):
    torch.manual_seed(0)
    xyz = torch.randn(30, 3, dtype=F64) * 5
    angle = 0.4
    rot = [[math.cos(angle), math.sin(angle), 0], [-math.sin(angle), math.cos(angle), 0], [0, 0, 1]]
    meta = {
        "transformation_3d_flow": ["R", "S", "T", "HF", "VF"],
        "pcd_rotation": torch.tensor(rot, dtype=F64),
        "pcd_scale_factor": 1.07,
        "pcd_trans": [0.3, -0.2, 0.1],
        "pcd_horizontal_flip": True,
        "pcd_vertical_flip": True,
    }
    augmented = torch.cat([augment_3d(xyz, meta, flip_axes), torch.rand(30, 1)], dim=1)
    back = undo_3d_augmentation(augmented, meta, coord_type)
    torch.testing.assert_close(back, xyz, rtol=0, atol=1e-12)
    # Without the flow nothing is undone, whatever else the meta holds (as in the reference).
    meta.pop("transformation_3d_flow")
    assert torch.equal(undo_3d_augmentation(augmented, meta, coord_type), augmented[:, :3])
    with pytest.raises(ValueError, match="unknown"):
        undo_3d_augmentation(xyz, {"transformation_3d_flow": ["X"]})


def test_augmented_points_land_on_the_hand_pixels():
    pts, pixels, depth = hand_points()
    meta = {
        "lidar2img": lidar2img(),
        "transformation_3d_flow": ["T", "HF"],
        "pcd_trans": [1.0, 2.0, 0.5],
        "pcd_horizontal_flip": True,
    }
    augmented = pts + torch.tensor([1.0, 2.0, 0.5], dtype=F64)
    augmented[:, 1] *= -1
    got, got_depth = point_pixels(augmented, meta)
    torch.testing.assert_close(got, pixels, rtol=0, atol=1e-12)
    torch.testing.assert_close(got_depth, depth, rtol=0, atol=1e-12)


def ramp(height: int, width: int, input_shape: tuple[int, int], align_corners: bool):
    """A (2, h, w) map whose bilinear sample at input pixel (u, v) is (u, v) itself."""
    in_h, in_w = input_shape
    if align_corners:  # input pixel u sits at map index u / W * (w - 1)
        xs = torch.arange(width, dtype=F64) * in_w / (width - 1)
        ys = torch.arange(height, dtype=F64) * in_h / (height - 1)
    else:  # map pixel j covers input [j, j + 1) * stride; its centre is (j + 0.5) * stride
        xs = (torch.arange(width, dtype=F64) + 0.5) * in_w / width
        ys = (torch.arange(height, dtype=F64) + 0.5) * in_h / height
    return torch.stack([xs.expand(height, width), ys[:, None].expand(height, width)])


@pytest.mark.parametrize("align_corners", [False, True])
def test_sampling_reads_the_pixel_at_every_stride(align_corners):
    input_shape = (64, 128)
    torch.manual_seed(1)
    # Interior pixels (at least half a stride-8 cell from the border), where bilinear is exact.
    pixels = torch.rand(40, 2, dtype=F64) * torch.tensor([112.0, 48.0], dtype=F64) + 8
    maps = [ramp(64 // s, 128 // s, input_shape, align_corners) for s in (1, 2, 4, 8)]
    got = sample_features(maps, pixels, input_shape, align_corners=align_corners)
    assert got.shape == (40, 8)
    for level in range(4):
        torch.testing.assert_close(got[:, 2 * level : 2 * level + 2], pixels, rtol=0, atol=1e-10)


@pytest.mark.parametrize("align_corners", [False, True])
def test_flipped_and_scaled_images_sample_the_same_scene_point(align_corners):
    pts, pixels, _ = hand_points()
    pts, pixels = pts[:4], pixels[:4]  # in front of the camera
    torch.manual_seed(2)
    image = torch.randn(3, 64, 128, dtype=F64)  # stride-2 features of a 128 x 256 padded input
    base = {"lidar2img": lidar2img(), "img_shape": (128, 256), "input_shape": (128, 256)}
    plain = point_pixels(pts, base)[0]
    plain = sample_features([image], plain, (128, 256), align_corners=align_corners)
    flipped = point_pixels(pts, dict(base, flip=True))[0]
    got = sample_features([image.flip(-1)], flipped, (128, 256), align_corners=align_corners)
    torch.testing.assert_close(got, plain, rtol=0, atol=1e-12)

    # The hand pixels through resize (x0.5, x0.75), crop (4, 2) and flip, read off ramp maps.
    meta = {
        "lidar2img": lidar2img(),
        "scale_factor": [0.5, 0.75, 0.5, 0.75],
        "img_crop_offset": (4, 2),
        "flip": True,
        "img_shape": (40, 60),
        "input_shape": (48, 64),
    }
    expected = pixels * torch.tensor([0.5, 0.75], dtype=F64) - torch.tensor([4, 2], dtype=F64)
    expected[:, 0] = 60 - expected[:, 0]
    got_pixels = point_pixels(pts, meta)[0]
    torch.testing.assert_close(got_pixels, expected, rtol=0, atol=1e-12)
    maps = [ramp(48 // s, 64 // s, (48, 64), align_corners) for s in (1, 2)]
    got = sample_features(maps, got_pixels, (48, 64), align_corners=align_corners)
    torch.testing.assert_close(got, expected.repeat(1, 2), rtol=0, atol=1e-10)


def test_inside_image_masks_behind_and_outside():
    pts, _, _ = hand_points()
    meta = {"lidar2img": lidar2img(), "img_shape": (40, 70)}
    pixels, depth = point_pixels(pts, meta)
    # (64, 32) in; (74, 32) right of w=70; (64, 22) in; (54, 42) below h=40; last one behind.
    assert inside_image(pixels, depth, meta).tolist() == [True, False, True, False, False]


def test_zero_padding_outside_the_maps():
    fmap = torch.ones(1, 4, 4, dtype=F64)
    pixels = torch.tensor([[-20.0, 2.0], [2.0, 2.0], [2.0, 50.0]], dtype=F64)
    got = sample_features([fmap], pixels, (4, 4), align_corners=False)
    assert got.squeeze(1).tolist() == [0.0, 1.0, 0.0]


def test_projection_matrix_rejects_bad_shapes():
    like = torch.zeros(1, dtype=F64)
    with pytest.raises(ValueError, match="3x3, 3x4 or 4x4"):
        projection_matrix({"lidar2img": torch.eye(2)}, "LIDAR", like)
    with pytest.raises(ValueError, match="coord_type"):
        projection_matrix({"lidar2img": torch.eye(4)}, "RADAR", like)
