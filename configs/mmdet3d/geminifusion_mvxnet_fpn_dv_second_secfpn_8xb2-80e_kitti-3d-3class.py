# MVX-Net (dynamic voxels, SECOND, KITTI 3 classes) with GeminiFusion in its voxel encoder.
#
# Everything (data, schedule, detector) comes from MMDetection3D's own MVX-Net config; only the
# voxel encoder changes: DynamicVFE -> GeminiDynamicVFE (fuses after every VFE layer) and
# PointFusion -> GeminiPointFusion. Needs MMDetection3D 1.x installed with its configs
# (pip installs them under mmdet3d/.mim); otherwise point _base_ at your checkout's
# configs/mvxnet/mvxnet_fpn_dv_second_secfpn_8xb2-80e_kitti-3d-3class.py.
#
#   python tools/train.py /path/to/this/config.py      # from an MMDetection3D checkout
#
# load_from is the base config's stock MVX-Net checkpoint. Its DynamicVFE keys load as they are
# except the PointFusion ones (pts_voxel_encoder.fusion_layer.*), which GeminiDynamicVFE renames
# on load to its last fusion slot (fusion_layer.1.*); the GeminiFusion layers and the first
# fusion slot keep their initialisation, and MMEngine lists them as missing keys.
# geminifusion.detection3d.load_mvxnet_weights does the same load and returns that list.
#
# The GeminiFusion paper reports Car 3D AP (R11, IoU 0.7, KITTI val, easy/moderate/hard)
# 88.49 / 77.36 / 74.61 for this model against 87.49 / 77.04 / 74.54 for MVX-Net; this package
# has not reproduced that training.
_base_ = ["mmdet3d::mvxnet/mvxnet_fpn_dv_second_secfpn_8xb2-80e_kitti-3d-3class.py"]

# Importing the package registers GeminiDynamicVFE and GeminiPointFusion in mmdet3d's MODELS.
custom_imports = dict(imports=["geminifusion.detection3d"], allow_failed_imports=False)

voxel_size = [0.05, 0.05, 0.1]
point_cloud_range = [0, -40, -3, 70.4, 40, 1]

model = dict(
    pts_voxel_encoder=dict(
        _delete_=True,
        type="GeminiDynamicVFE",
        in_channels=4,
        feat_channels=[64, 64],
        with_distance=False,
        with_cluster_center=True,
        with_voxel_center=True,
        voxel_size=voxel_size,
        point_cloud_range=point_cloud_range,
        fuse_every_layer=True,
        # Probability that a training sample loses its image (its points then fuse zero image
        # features), for a detector that keeps working when the camera fails. Off, as in the
        # paper; without images the detector runs either way.
        camera_dropout=0.0,
        fusion_layer=dict(
            type="GeminiPointFusion",
            img_channels=256,
            pts_channels=64,
            mid_channels=128,
            out_channels=128,
            img_levels=[0, 1, 2, 3, 4],
            align_corners=False,
            activate_out=True,
            fuse_out=False,
        ),
    )
)
