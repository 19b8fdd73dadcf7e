"""A synthetic LiDAR + camera task on which image fusion must help; runs on a CPU in minutes.

SYNTHETIC DATA, NOT KITTI: nothing here measures 3D detection quality. Each random scene has a
ground plane, red cars, blue cars and pedestrians of random colours, seen by a LiDAR (surface
points, intensity uninformative) and by a camera (a rendered image of the same scene, with
occlusion). Red and blue cars share one shape distribution, so only the image tells them apart.
A per-point classifier built on :class:`GeminiDynamicVFE` is trained LiDAR only, with MVX-Net's
sum fusion after the last VFE layer, with the sum after every layer (the ablation that separates
"where" from "how"), and with GeminiFusion after every layer, over a few seeds. Training uses
a detector's augmentations (rotation, scaling and a BEV flip of the points, a flip of the
image), recorded in ``img_metas`` as MMDetection3D does, so the fusion has to undo them to find
the right pixels.

Every model is scored twice: with its camera, and with the camera failed (no image: the fusion
layers read zero image features). The fusion models are trained a second time with camera
dropout (each training sample loses its image with probability ``camera_dropout``), to show
what that buys when the camera fails and costs when it works. Scores are per-point IoU and a
per-class average precision of the per-point class scores (point-classification AP, not
detection AP).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from geminifusion.detection3d.scatter import dynamic_voxelize, gather_from_voxels
from geminifusion.detection3d.voxel_encoder import GeminiDynamicVFE

CLASSES = ("background", "red car", "blue car", "pedestrian")
BLIND = "no camera "  # prefix of the metrics scored with the camera failed
DROPOUT = "+dropout"  # suffix of the runs trained with camera dropout
METHODS = {
    "lidar": "LiDAR only",
    "sum": "sum fusion, last layer (MVX-Net)",
    "sum_every": "sum fusion, every layer",
    "gemini": "GeminiFusion, every layer",
}
GROUND_Z = -1.7  # the LiDAR sits 1.7 m above the road
CAMERA_POSITION = (0.3, 0.0, -0.1)  # in the LiDAR frame (x forward, y left, z up)
VOXEL_SIZE = (0.5, 0.5, 4.0)  # pillars
POINT_CLOUD_RANGE = (-8.0, -40.0, -3.0, 40.0, 40.0, 1.0)
SKY, ROAD = (0.55, 0.7, 0.9), (0.42, 0.42, 0.4)
CAR_COLOURS = {1: (0.8, 0.12, 0.1), 2: (0.1, 0.2, 0.8)}


@dataclass(frozen=True)
class DemoConfig:
    """Sizes of the demonstration; :data:`PRESETS` holds the named ones."""

    train_scenes: int = 192
    val_scenes: int = 64
    epochs: int = 6
    batch_size: int = 8
    seeds: tuple[int, ...] = (0, 1, 2)
    methods: tuple[str, ...] = tuple(METHODS)
    image_size: tuple[int, int] = (64, 128)
    channels: int = 32
    image_channels: int = 16
    lr: float = 3e-3
    objects: tuple[int, int] = (3, 7)  # per scene, inclusive range
    ground_points: int = 700
    object_density: float = 2500.0  # sampled surface points per m^2 at 1 m (falls with range^2)
    camera_dropout: float = 0.5  # of the extra fusion runs trained for camera failure; 0: none


PRESETS = {
    "full": DemoConfig(),
    "tiny": DemoConfig(
        train_scenes=12,
        val_scenes=6,
        epochs=1,
        batch_size=4,
        seeds=(0,),
        image_size=(32, 64),
        channels=16,
        image_channels=8,
        ground_points=150,
        object_density=1000.0,
    ),
}


# ----------------------------------------------------------------------------- scenes


@dataclass
class Scene:
    points: Tensor  # (N, 4): x, y, z, intensity
    labels: Tensor  # (N,) class index into CLASSES
    image: Tensor  # (3, H, W) in [0, 1]


def camera_matrix(image_size: tuple[int, int]) -> np.ndarray:
    """4x4 ``lidar2img`` of a 90-degree camera at :data:`CAMERA_POSITION` looking along x."""
    height, width = image_size
    focal = width / 2
    intrinsic = np.eye(4)
    intrinsic[:3, :3] = [[focal, 0, width / 2], [0, focal, 0.45 * height], [0, 0, 1]]
    rotation = np.array([[0.0, -1, 0], [0, 0, -1], [1, 0, 0]])  # LiDAR axes -> camera axes
    extrinsic = np.eye(4)
    extrinsic[:3, :3] = rotation
    extrinsic[:3, 3] = -rotation @ np.array(CAMERA_POSITION)
    return intrinsic @ extrinsic


def _project(xyz: np.ndarray, lidar2img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    projected = np.concatenate([xyz, np.ones((len(xyz), 1))], axis=1) @ lidar2img.T
    return projected[:, :2] / projected[:, 2:3], projected[:, 2]


def _convex_hull(pts: np.ndarray) -> np.ndarray:
    """Counter-clockwise hull (in image axes) of a few 2D points, monotone chain."""
    order = sorted(map(tuple, pts))

    def half(seq):
        out: list[tuple[float, float]] = []
        for p in seq:
            while len(out) >= 2:
                (ax, ay), (bx, by) = out[-2], out[-1]
                if (bx - ax) * (p[1] - ay) - (by - ay) * (p[0] - ax) > 0:
                    break
                out.pop()
            out.append(p)
        return out[:-1]

    return np.array(half(order) + half(order[::-1]))


def _fill_polygon(hull: np.ndarray, height: int, width: int) -> np.ndarray:
    """Boolean mask of the pixels that overlap a convex polygon (conservative rasterisation).

    A pixel counts when its centre lies within half a pixel diagonal outside every edge, so the
    points on an object's outline still land on the object's colour.
    """
    mask = np.zeros((height, width), dtype=bool)
    lo = np.floor(hull.min(axis=0) - 1).astype(int).clip(0, [width, height])
    hi = np.ceil(hull.max(axis=0) + 1).astype(int).clip(0, [width, height])
    if (hi <= lo).any():
        return mask
    us, vs = np.meshgrid(np.arange(lo[0], hi[0]) + 0.5, np.arange(lo[1], hi[1]) + 0.5)
    inside = np.ones(us.shape, dtype=bool)
    for a, b in zip(hull, np.roll(hull, -1, axis=0), strict=True):
        cross = (b[0] - a[0]) * (vs - a[1]) - (b[1] - a[1]) * (us - a[0])
        inside &= cross >= -math.sqrt(0.5) * math.hypot(b[0] - a[0], b[1] - a[1])
    mask[lo[1] : hi[1], lo[0] : hi[0]] = inside
    return mask


def _box_surface(rng: np.random.Generator, box: dict, count: int) -> np.ndarray:
    """Points on the faces of a box that face the LiDAR (no bottom face)."""
    length, width, height = box["size"]
    areas = np.array([width * height] * 2 + [length * height] * 2 + [length * width])
    face = rng.choice(5, size=count, p=areas / areas.sum())
    s, t = rng.uniform(-0.5, 0.5, count), rng.uniform(0, 1, count)
    local = np.zeros((count, 3))
    normal = np.zeros((count, 3))
    for f, (axis, sign) in enumerate([(0, 1), (0, -1), (1, 1), (1, -1), (2, 1)]):
        sel = face == f
        dims = [length, width]
        if axis < 2:
            other = 1 - axis
            local[sel, axis] = sign * dims[axis] / 2
            local[sel, other] = s[sel] * dims[other]
            local[sel, 2] = t[sel] * height
        else:
            local[sel, 0] = s[sel] * length
            local[sel, 1] = (t[sel] - 0.5) * width
            local[sel, 2] = height
        normal[sel, axis] = sign
    c, si = math.cos(box["yaw"]), math.sin(box["yaw"])
    rot = np.array([[c, -si, 0], [si, c, 0], [0, 0, 1]])
    world = local @ rot.T + np.array([box["x"], box["y"], GROUND_Z])
    facing = ((normal @ rot.T) * -world).sum(axis=1) > 0  # towards the sensor at the origin
    return world[facing] + rng.normal(0, 0.02, (int(facing.sum()), 3))


def _box_corners(box: dict) -> np.ndarray:
    length, width, height = box["size"]
    dx, dy, dz = np.meshgrid([-0.5, 0.5], [-0.5, 0.5], [0.0, 1.0], indexing="ij")
    local = np.stack([dx.ravel() * length, dy.ravel() * width, dz.ravel() * height], axis=1)
    c, s = math.cos(box["yaw"]), math.sin(box["yaw"])
    rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    return local @ rot.T + np.array([box["x"], box["y"], GROUND_Z])


def _sample_boxes(rng: np.random.Generator, cfg: DemoConfig) -> list[dict]:
    wanted = int(rng.integers(cfg.objects[0], cfg.objects[1] + 1))
    boxes: list[dict] = []
    for _ in range(60 * wanted):
        if len(boxes) == wanted:
            break
        cls = int(rng.integers(1, 4))
        if cls in CAR_COLOURS:
            size = (rng.uniform(3.6, 4.4), rng.uniform(1.5, 1.8), rng.uniform(1.4, 1.6))
            brightness = rng.uniform(0.55, 1.0)
            colour = np.array(CAR_COLOURS[cls]) * brightness
        else:
            size = (rng.uniform(0.5, 0.8), rng.uniform(0.5, 0.8), rng.uniform(1.6, 1.9))
            colour = rng.uniform(0.05, 0.95, 3)  # any colour: shape alone names a pedestrian
        x = rng.uniform(6, 28)
        y = rng.uniform(-0.7, 0.7) * x
        radius = math.hypot(size[0], size[1]) / 2
        if any(math.hypot(x - b["x"], y - b["y"]) < radius + b["radius"] + 0.5 for b in boxes):
            continue
        yaw = rng.uniform(-math.pi, math.pi)
        boxes.append(dict(cls=cls, size=size, x=x, y=y, yaw=yaw, radius=radius, colour=colour))
    return boxes


def make_scene(rng: np.random.Generator, cfg: DemoConfig) -> Scene:
    """One random scene: labelled points and the camera image, mutually consistent."""
    height, width = cfg.image_size
    lidar2img = camera_matrix(cfg.image_size)
    boxes = _sample_boxes(rng, cfg)

    # Ground, wider than the camera's field of view, minus the objects' footprints.
    r = rng.uniform(2, 36, cfg.ground_points)
    theta = rng.uniform(-1.3, 1.3, cfg.ground_points)
    ground = np.stack([r * np.cos(theta), r * np.sin(theta), np.full_like(r, GROUND_Z)], axis=1)
    ground[:, 2] += rng.normal(0, 0.03, len(r))
    for box in boxes:
        c, s = math.cos(box["yaw"]), math.sin(box["yaw"])
        dx, dy = ground[:, 0] - box["x"], ground[:, 1] - box["y"]
        along, across = c * dx + s * dy, -s * dx + c * dy
        inside = (np.abs(along) < box["size"][0] / 2 + 0.1) & (
            np.abs(across) < box["size"][1] / 2 + 0.1
        )
        ground = ground[~inside]
    parts, labels, owners = (
        [ground],
        [np.zeros(len(ground), dtype=np.int64)],
        [-np.ones(len(ground))],
    )
    for k, box in enumerate(boxes):
        length, width_, height_ = box["size"]
        area = 2 * (length + width_) * height_ + length * width_
        distance = math.hypot(box["x"], box["y"])
        count = max(12, int(cfg.object_density * area / distance**2))
        surface = _box_surface(rng, box, count)
        parts.append(surface)
        labels.append(np.full(len(surface), box["cls"], dtype=np.int64))
        owners.append(np.full(len(surface), k))
    xyz, label, owner = np.concatenate(parts), np.concatenate(labels), np.concatenate(owners)

    # Render far to near; remember which object owns each pixel and at what depth.
    image = np.empty((3, height, width))
    horizon = int(0.45 * height)
    image[:, :horizon] = np.array(SKY)[:, None, None]
    image[:, horizon:] = np.array(ROAD)[:, None, None] * rng.uniform(0.8, 1.2)
    owner_map = -np.ones((height, width), dtype=int)
    depth_map = np.full((height, width), np.inf)
    depths = [
        _project(np.array([[b["x"], b["y"], GROUND_Z + b["size"][2] / 2]]), lidar2img)[1][0]
        for b in boxes
    ]
    for k in np.argsort(depths)[::-1]:
        pixels, _ = _project(_box_corners(boxes[k]), lidar2img)
        mask = _fill_polygon(_convex_hull(pixels), height, width)
        image[:, mask] = boxes[k]["colour"][:, None]
        owner_map[mask], depth_map[mask] = k, depths[k]
    image = np.clip(image + rng.normal(0, 0.04, image.shape), 0, 1)

    # The LiDAR sits by the camera: drop points hidden behind a nearer object in the image.
    pixels, depth = _project(xyz, lidar2img)
    col, row = np.floor(pixels[:, 0]).astype(int), np.floor(pixels[:, 1]).astype(int)
    seen = (depth > 0) & (col >= 0) & (col < width) & (row >= 0) & (row < height)
    hidden = np.zeros(len(xyz), dtype=bool)
    blocker = owner_map[row[seen], col[seen]]
    hidden[seen] = (
        (blocker >= 0)
        & (blocker != owner[seen])
        & (depth_map[row[seen], col[seen]] < depth[seen] - 0.5)
    )
    xyz, label = xyz[~hidden], label[~hidden]
    intensity = rng.uniform(0, 1, (len(xyz), 1))
    points = np.concatenate([xyz, intensity], axis=1)
    return Scene(
        torch.from_numpy(points).float(),
        torch.from_numpy(label),
        torch.from_numpy(image).float(),
    )


def make_scenes(count: int, seed: int, cfg: DemoConfig) -> list[Scene]:
    rng = np.random.default_rng(seed)
    return [make_scene(rng, cfg) for _ in range(count)]


# ----------------------------------------------------------------------------- batches


@dataclass
class Batch:
    features: Tensor  # (N, 4) all points
    coors: Tensor  # (N, 4) batch, z, y, x
    points: list[Tensor]  # per sample
    images: Tensor  # (B, 3, H, W)
    metas: list[dict]
    labels: Tensor  # (N,)


def collate(scenes: Sequence[Scene], cfg: DemoConfig, rng: np.random.Generator | None) -> Batch:
    """Stack scenes; with ``rng``, augment as a detector's pipeline would and record it."""
    lidar2img = camera_matrix(cfg.image_size)
    points, coors, images, metas, labels = [], [], [], [], []
    for b, scene in enumerate(scenes):
        xyz, image = scene.points.clone(), scene.image
        meta = dict(lidar2img=lidar2img, img_shape=cfg.image_size, input_shape=cfg.image_size)
        if rng is not None:
            angle, scale = rng.uniform(-math.pi / 8, math.pi / 8), rng.uniform(0.95, 1.05)
            c, s = math.cos(angle), math.sin(angle)
            rotation = torch.tensor([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]])
            flip_bev, flip_image = bool(rng.random() < 0.5), bool(rng.random() < 0.5)
            xyz[:, :3] = xyz[:, :3] @ rotation * scale
            if flip_bev:
                xyz[:, 1] = -xyz[:, 1]
            if flip_image:
                image = image.flip(-1)
            meta.update(
                transformation_3d_flow=["R", "S", "HF"],
                pcd_rotation=rotation,
                pcd_scale_factor=scale,
                pcd_horizontal_flip=flip_bev,
                flip=flip_image,
            )
        voxel = dynamic_voxelize(xyz, VOXEL_SIZE, POINT_CLOUD_RANGE)
        keep = (voxel >= 0).all(dim=1)
        points.append(xyz[keep])
        coors.append(F.pad(voxel[keep], (1, 0), value=b))
        labels.append(scene.labels[keep])
        images.append(image)
        metas.append(meta)
    return Batch(
        torch.cat(points),
        torch.cat(coors),
        points,
        torch.stack(images) - 0.5,
        metas,
        torch.cat(labels),
    )


# ----------------------------------------------------------------------------- model


class TinyImageFPN(nn.Module):
    """Three stride-2 conv stages: feature maps at 1/2, 1/4 and 1/8 of the image."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.stages = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(3 if i == 0 else channels, channels, 3, stride=2, padding=1),
                nn.BatchNorm2d(channels),
                nn.ReLU(),
            )
            for i in range(3)
        )

    def forward(self, image: Tensor) -> list[Tensor]:
        feats = []
        for stage in self.stages:
            image = stage(image)
            feats.append(image)
        return feats


class PointSegmenter(nn.Module):
    """Voxel encoder (optionally fusing the image) and a per-point classification head."""

    def __init__(self, method: str, cfg: DemoConfig, camera_dropout: float = 0.0) -> None:
        super().__init__()
        if method not in METHODS:
            raise ValueError(f"method must be one of {sorted(METHODS)}, got {method!r}")
        c = cfg.channels
        self.image_net = None if method == "lidar" else TinyImageFPN(cfg.image_channels)
        fusion_layer = None
        if method != "lidar":
            fusion_layer = dict(
                type="GeminiPointFusion" if method == "gemini" else "SumPointFusion",
                img_channels=cfg.image_channels,
                pts_channels=c,
                mid_channels=c,
                out_channels=c,
                img_levels=[0, 1, 2],
                align_corners=False,
            )
        self.encoder = GeminiDynamicVFE(
            in_channels=4,
            feat_channels=(c, c),
            with_cluster_center=True,
            with_voxel_center=True,
            voxel_size=VOXEL_SIZE,
            point_cloud_range=POINT_CLOUD_RANGE,
            fusion_layer=fusion_layer,
            fuse_every_layer=method != "sum",
            camera_dropout=camera_dropout,
        )
        self.head = nn.Sequential(nn.Linear(2 * c, c), nn.ReLU(), nn.Linear(c, len(CLASSES)))

    def forward(self, batch: Batch, camera: bool = True) -> Tensor:
        """Per-point class logits; ``camera=False``: the camera failed (no image at all)."""
        img_feats = None if self.image_net is None or not camera else self.image_net(batch.images)
        point_feats, voxel_feats, voxels = self.encoder.forward_points(
            batch.features, batch.coors, batch.points, img_feats, batch.metas
        )
        return self.head(torch.cat([point_feats, gather_from_voxels(voxel_feats, voxels)], dim=1))


# ----------------------------------------------------------------------------- training


@torch.no_grad()
def _recalibrate_batchnorm(model: nn.Module, batches: Sequence[Batch]) -> None:
    """Exact batch-norm statistics over training batches (momentum 0.01 has not settled)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    model.train()
    for batch in batches:
        model(batch)
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum


def average_precision(scores: Tensor, positive: Tensor) -> float:
    """Area under the precision-recall curve of ranking by ``scores`` (no interpolation).

    The mean, over the positives, of the precision among the points ranked at or above each
    positive (scikit-learn's ``average_precision_score`` without ties); ``nan`` without one.
    """
    hits = positive[torch.argsort(scores, descending=True, stable=True)].double()
    if not hits.any():
        return math.nan
    precision = hits.cumsum(0) / torch.arange(1, len(hits) + 1, dtype=torch.float64)
    return float((precision * hits).sum() / hits.sum())


@torch.no_grad()
def evaluate(
    model: nn.Module, scenes: Sequence[Scene], cfg: DemoConfig, camera: bool = True
) -> dict[str, float]:
    """Per-point scores over all points, in percent.

    Per-class IoU, ``mIoU``, overall accuracy ``aAcc``; per-class point-classification average
    precision (``AP <class>``, of the softmax score of that class over all points) and ``mAP``,
    its mean over the object classes (background left out, as detection mAP leaves it out).
    """
    model.eval()
    k = len(CLASSES)
    confusion = torch.zeros(k, k, dtype=torch.long)
    probs, labels = [], []
    for i in range(0, len(scenes), cfg.batch_size):
        batch = collate(scenes[i : i + cfg.batch_size], cfg, None)
        logits = model(batch, camera=camera)
        pred = logits.argmax(dim=1)
        confusion += torch.bincount(batch.labels * k + pred, minlength=k * k).view(k, k)
        probs.append(logits.softmax(dim=1))
        labels.append(batch.labels)
    tp = confusion.diag().double()
    union = confusion.sum(0) + confusion.sum(1) - confusion.diag()
    iou = tp / union.clamp(min=1)
    metrics = {name: 100 * float(iou[c]) for c, name in enumerate(CLASSES)}
    metrics["mIoU"] = 100 * float(iou.mean())
    metrics["aAcc"] = 100 * float(tp.sum() / confusion.sum())
    prob, label = torch.cat(probs), torch.cat(labels)
    ap = [100 * average_precision(prob[:, c], label == c) for c in range(k)]
    metrics.update({f"AP {name}": value for name, value in zip(CLASSES, ap, strict=True)})
    metrics["mAP"] = statistics.fmean(ap[1:])
    return metrics


def train_one(
    method: str,
    seed: int,
    train: Sequence[Scene],
    val: Sequence[Scene],
    cfg: DemoConfig,
    camera_dropout: float = 0.0,
) -> dict[str, float]:
    """Train one model from scratch; its validation metrics with the camera, the same metrics
    without it (prefixed ``no camera``), its size and its time."""
    start, start_cpu = time.perf_counter(), time.process_time()
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed + 1000)
    model = PointSegmenter(method, cfg, camera_dropout)
    steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, cfg.lr, total_steps=total)
    bar = tqdm(total=total, desc=f"{method} seed {seed}", leave=False, disable=None)
    model.train()
    for _ in range(cfg.epochs):
        for i in rng.permutation(steps_per_epoch):
            chunk = [
                train[j]
                for j in range(i * cfg.batch_size, min(len(train), (i + 1) * cfg.batch_size))
            ]
            batch = collate(chunk, cfg, rng)
            loss = F.cross_entropy(model(batch), batch.labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            bar.update()
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    calibration = [
        collate(train[i : i + cfg.batch_size], cfg, rng)
        for i in range(0, min(len(train), 8 * cfg.batch_size), cfg.batch_size)
    ]
    _recalibrate_batchnorm(model, calibration)
    metrics = evaluate(model, val, cfg)
    blind = evaluate(model, val, cfg, camera=False)
    metrics.update({f"{BLIND}{name}": value for name, value in blind.items()})
    metrics["params"] = float(sum(p.numel() for p in model.parameters()))
    metrics["seconds"] = time.perf_counter() - start
    metrics["cpu_seconds"] = time.process_time() - start_cpu  # unlike wall time, load-proof
    return metrics


@dataclass
class DemoResult:
    config: DemoConfig
    runs: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return {"config": asdict(self.config), "runs": self.runs, "seconds": self.seconds}


def variants(cfg: DemoConfig) -> list[tuple[str, str, float]]:
    """``(run name, method, camera dropout)`` of every run: each method as is, then each fusion
    method again with camera dropout (run name ``<method>+dropout``) unless it is 0."""
    runs = [(method, method, 0.0) for method in cfg.methods]
    if cfg.camera_dropout > 0:
        runs += [(f"{m}{DROPOUT}", m, cfg.camera_dropout) for m in cfg.methods if m != "lidar"]
    return runs


def run_demo(cfg: DemoConfig = PRESETS["full"]) -> DemoResult:
    """Train every variant on every seed's data; seeds vary both the scenes and the init."""
    result = DemoResult(cfg)
    start = time.perf_counter()
    for seed in cfg.seeds:
        train = make_scenes(cfg.train_scenes, 2 * seed, cfg)
        val = make_scenes(cfg.val_scenes, 2 * seed + 1, cfg)
        for name, method, dropout in variants(cfg):
            metrics = train_one(method, seed, train, val, cfg, dropout)
            result.runs.setdefault(name, []).append(metrics)
    result.seconds = time.perf_counter() - start
    return result


def _mean_std(values: Sequence[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.1f} ± {spread:.1f}"


def _run_label(name: str, cfg: DemoConfig) -> str:
    method = name.removesuffix(DROPOUT)
    return METHODS[method] + (f", camera dropout {cfg.camera_dropout:g}" if method != name else "")


def _markdown(head: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows, strict=True)]

    def line(cells):
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return [line(head), rule, *map(line, rows)]


def _scope(cfg: DemoConfig) -> str:
    return (
        f"{len(cfg.seeds)} seed(s) {list(cfg.seeds)}, mean ± std; "
        f"{cfg.train_scenes} train / {cfg.val_scenes} val scenes, {cfg.epochs} epochs"
    )


def format_table(result: DemoResult) -> str:
    """mmseg-style per-class table (camera working), mean ± std over seeds, labelled synthetic."""
    cfg = result.config
    columns = [*CLASSES, "mIoU", "aAcc"]
    rows = []
    for name, runs in result.runs.items():
        cells = [_run_label(name, cfg), f"{runs[0]['params'] / 1e3:.1f}K"]
        cells += [_mean_std([r[col] for r in runs]) for col in columns]
        cells.append(f"{statistics.mean(r['cpu_seconds'] for r in runs):.0f} s")
        rows.append(cells)
    title = (
        "SYNTHETIC LiDAR + camera point classification (not KITTI, not detection AP): "
        f"per-point IoU (%), camera working, {_scope(cfg)}"
    )
    head = ["Model", "Params", *columns, "CPU time"]
    return "\n".join([title, *_markdown(head, rows)])


def format_camera_table(result: DemoResult) -> str:
    """Camera working against camera failed, per model and training: mIoU and point mAP."""
    cfg = result.config
    head = ["Model", "mIoU camera", "mIoU no camera", "point mAP camera", "point mAP no camera"]
    rows = [
        [_run_label(name, cfg)]
        + [
            _mean_std([r[prefix + metric] for r in runs])
            for metric in ("mIoU", "mAP")
            for prefix in ("", BLIND)
        ]
        for name, runs in result.runs.items()
    ]
    title = (
        "SYNTHETIC camera failure (not KITTI): per-point mIoU (%) and point-classification mAP "
        "(%, average precision of the per-point class scores, mean over red car, blue car and "
        f"pedestrian; not detection AP), camera working vs no image, {_scope(cfg)}"
    )
    return "\n".join([title, *_markdown(head, rows)])


def preset(name: str, **overrides: object) -> DemoConfig:
    """A named :data:`PRESETS` entry with some fields replaced (``None`` keeps the preset's)."""
    if name not in PRESETS:
        raise ValueError(f"unknown demo size {name!r}; known: {sorted(PRESETS)}")
    return replace(PRESETS[name], **{k: v for k, v in overrides.items() if v is not None})
