"""SPIN npz loading, crops, augmentation consistency, flip, mixing and deterministic sampling."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from mocap.errors import MocapError
from mocap.train import augment as aug
from mocap.train import data as D


@pytest.fixture(scope="module")
def h36m(shared_data: Path) -> D.Annotations:
    root = shared_data / "spin_npz"
    return D.load_annotations(D.DataSpec(root / "test_h36m.npz", root / "images" / "h36m"))


def _bilinear(image: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """(H, W, 3) image sampled at (N, 2) pixel positions -> (N, 3)."""
    maps = xy.astype(np.float32).reshape(-1, 1, 2)
    return cv2.remap(
        image.astype(np.float32), maps[..., 0], maps[..., 1], cv2.INTER_LINEAR
    ).reshape(-1, 3)


def _crop_rgb(sample: D.Sample) -> np.ndarray:
    assert sample.image is not None
    return (sample.image.transpose(1, 2, 0) * aug.IMAGENET_STD + aug.IMAGENET_MEAN) * 255.0


def test_loads_real_h36m_and_17_joint_files(shared_data: Path, h36m: D.Annotations) -> None:
    root = shared_data / "spin_npz"
    assert len(h36m) == 4 and h36m.has_smpl.tolist() == [1, 1, 1, 1] and h36m.has_3d.all()
    # The 17-joint file of the same images maps onto the same 24-joint positions.
    body3d = D.load_annotations(D.DataSpec(root / "test_h36m_body3d.npz", root / "images" / "h36m"))
    assert body3d.image_paths == h36m.image_paths and not body3d.has_smpl.any()
    mapped = list(D.SPIN24_FROM_H36M17)
    np.testing.assert_allclose(
        body3d.keypoints_2d[:, mapped], h36m.keypoints_2d[:, mapped], atol=0.05
    )
    np.testing.assert_allclose(body3d.joints_3d[:, mapped], h36m.joints_3d[:, mapped], atol=1e-3)
    assert (body3d.keypoints_2d[:, [13, 19, 20, 21, 22, 23], 2] == 0).all()
    hp = D.load_annotations(
        D.parse_data_spec(f"{root}/test_3dhp_test.npz:{root}/images/mpi_inf_3dhp:0.5")
    )
    assert len(hp) == 2 and hp.has_3d.all() and not hp.has_smpl.any()


def test_data_spec_errors(tmp_path: Path) -> None:
    assert D.parse_data_spec("a/b.npz").image_root == Path("a")
    assert D.parse_data_spec("b.npz:imgs:0.25").weight == 0.25
    with pytest.raises(MocapError, match="weight"):
        D.parse_data_spec("b.npz:imgs:heavy")
    with pytest.raises(MocapError, match="does not exist"):
        D.load_annotations(D.DataSpec(tmp_path / "none.npz", tmp_path))
    np.savez(tmp_path / "bad.npz", imgname=np.array(["x.jpg"]), center=np.zeros((1, 2)))
    with pytest.raises(MocapError, match="lacks 'scale'"):
        D.load_annotations(D.DataSpec(tmp_path / "bad.npz", tmp_path))


@pytest.mark.parametrize(
    "params",
    [
        aug.AugmentParams(),
        aug.AugmentParams(scale=1.25, rot_deg=25.0, shift=(0.02, -0.02)),
        aug.AugmentParams(scale=0.8, rot_deg=-40.0, flip=True),
    ],
)
def test_crop_keeps_joints_on_the_person(h36m: D.Annotations, params: aug.AugmentParams) -> None:
    """Crop pixels at the transformed joints are the source pixels at the original joints."""
    for i in range(len(h36m)):
        sample = D.make_sample(h36m, i, params, i)
        crop = _crop_rgb(sample)
        src = cv2.imread(str(h36m.image_paths[i]))[:, :, ::-1]
        src_kp = h36m.keypoints_2d[i]
        perm = list(aug.SPIN24_FLIP_PERM) if params.flip else list(range(24))
        valid = src_kp[perm, 2] > 0
        crop_xy = aug.normalized_to_pixels(sample.keypoints_2d[:, :2].astype(np.float64))[valid]
        # Labelled joints lie inside the crop (all of them unless the augmentation zooms in).
        inside = ((crop_xy >= 1) & (crop_xy < [191, 255])).all(1)
        assert inside.all() if params.scale >= 1.0 else inside.sum() >= 8
        crop_xy = crop_xy[inside]
        lo, hi = crop_xy.min(0), crop_xy.max(0)
        assert (hi - lo).max() > 80, "the person should fill a good part of the crop"
        # The person is not background: crop colour at each joint = source colour at that joint.
        source_rgb = _bilinear(src, src_kp[perm][valid][inside, :2])
        crop_rgb = _bilinear(crop, crop_xy)
        err = np.abs(crop_rgb - source_rgb).mean()
        shifted = _bilinear(crop, np.clip(crop_xy + [40.0, 0.0], 0, [191, 255]))
        assert err < 12.0, err
        assert np.abs(shifted - source_rgb).mean() > 2 * err


def test_3d_joints_and_root_follow_the_rotation(h36m: D.Annotations) -> None:
    """After rotation the 3D joints still project (weak perspective) onto the 2D joints."""

    def fit_residual(s: D.Sample) -> float:
        m = (s.joints_3d[:, 3] > 0) & (s.keypoints_2d[:, 2] > 0)
        xyz, uv = s.joints_3d[m, :3], s.keypoints_2d[m, :2]
        a = np.concatenate([xyz[:, :2] / xyz[:, 2:], np.ones((m.sum(), 1))], 1)
        res = [
            uv[:, k] - a[:, [k, 2]] @ np.linalg.lstsq(a[:, [k, 2]], uv[:, k], rcond=None)[0]
            for k in (0, 1)
        ]
        return float(np.abs(np.stack(res)).max())

    for i in range(len(h36m)):
        base = fit_residual(D.make_sample(h36m, i, aug.AugmentParams(), i, load_image=False))
        p = aug.AugmentParams(rot_deg=35.0, flip=True)
        rotated = fit_residual(D.make_sample(h36m, i, p, i, load_image=False))
        assert rotated < base + 3e-3, (base, rotated)
        # An unrotated 3D skeleton does not fit the rotated 2D joints.
        wrong = D.make_sample(h36m, i, p, i, load_image=False)
        wrong.joints_3d = aug.flip_joints_3d(h36m.joints_3d[i])
        assert fit_residual(wrong) > 5 * base + 0.01
    # The root rotation turns with the image: the body's up axis rotates by the same angle in-plane.
    pose = h36m.pose[0].astype(np.float64)
    up = cv2.Rodrigues(pose[:3])[0][:, 1]
    up_rot = cv2.Rodrigues(aug.rotate_global_orient(pose, 30.0)[:3])[0][:, 1]
    np.testing.assert_allclose(up_rot, aug.rotation_z(30.0) @ up, atol=1e-9)


def test_flip_is_its_own_inverse(h36m: D.Annotations) -> None:
    params = aug.AugmentParams(scale=1.1, rot_deg=12.0, flip=False)
    sample = D.make_sample(h36m, 2, params, 2)
    twice = D.flip_sample(D.flip_sample(sample))
    assert sample.image is not None and twice.image is not None
    np.testing.assert_array_equal(twice.image, sample.image)
    np.testing.assert_allclose(twice.keypoints_2d, sample.keypoints_2d, rtol=0, atol=1e-7)
    np.testing.assert_array_equal(twice.joints_3d, sample.joints_3d)
    np.testing.assert_array_equal(twice.pose, sample.pose)
    once = D.flip_sample(sample)
    assert not np.allclose(once.pose, sample.pose) and not np.allclose(once.image, sample.image)
    # Mirroring a pose twice is the identity, and mirroring matches X -> -X on the rotations.
    rot = cv2.Rodrigues(sample.pose[:3].astype(np.float64))[0]
    mirror = np.diag([-1.0, 1.0, 1.0])
    flipped_rot = cv2.Rodrigues(once.pose[:3].astype(np.float64))[0]
    np.testing.assert_allclose(flipped_rot, mirror @ rot @ mirror, atol=1e-5)
    # The flipped crop equals the crop made with flip=True (one affine path for images and joints).
    direct = D.make_sample(h36m, 2, aug.AugmentParams(scale=1.1, rot_deg=12.0, flip=True), 2)
    np.testing.assert_array_equal(direct.image, once.image)
    np.testing.assert_allclose(direct.keypoints_2d, once.keypoints_2d, atol=1e-6)


def test_subset_and_sampler_are_deterministic() -> None:
    a, b = D.subset_indices(1000, 0.2), D.subset_indices(1000, 0.2)
    assert len(a) == 200 and np.array_equal(a, b) and len(np.unique(a)) == 200
    with pytest.raises(MocapError, match="subset"):
        D.subset_indices(10, 0.0)
    pools = [np.arange(0, 100), np.arange(100, 110)]
    one = D.MixtureBatchSampler(pools, [3.0, 1.0], batch_size=8, seed=5)
    batches = [next(iter(one)) for _ in range(200)]
    flat = np.array([i for b in batches for i, _ in b])
    assert 0.18 < (flat >= 100).mean() < 0.32  # weight 1/4 for the second dataset
    # Resuming at step 7 yields batch 7; two ranks together yield the same global batch.
    resumed = D.MixtureBatchSampler(pools, [3.0, 1.0], batch_size=8, seed=5, start_step=7)
    assert next(iter(resumed)) == batches[7]
    halves = [next(iter(D.MixtureBatchSampler(pools, [3.0, 1.0], 8, 5, 7, r, 2))) for r in (0, 1)]
    assert halves[0] + halves[1] == batches[7]
    with pytest.raises(MocapError, match="multiple"):
        D.MixtureBatchSampler(pools, [1.0, 1.0], batch_size=5, seed=0, world_size=2)


def test_mixed_dataset_collates_a_batch(shared_data: Path, h36m: D.Annotations) -> None:
    root = shared_data / "spin_npz"
    hp = D.load_annotations(
        D.DataSpec(root / "test_3dhp_test.npz", root / "images" / "mpi_inf_3dhp")
    )
    ds = D.MixedDataset([h36m, hp], aug.AugmentConfig())
    assert len(ds) == 6 and ds.locate(5) == (1, 1)
    batch = D.collate([ds[(i, 100 + i)] for i in range(6)])
    assert batch.images is not None and batch.images.shape == (6, 3, 256, 192)
    assert batch.rotmat.shape == (6, 24, 3, 3) and batch.has_smpl.tolist() == [1, 1, 1, 1, 0, 0]
    # Same key, same augmentation: results do not depend on call order or worker.
    np.testing.assert_array_equal(ds[(3, 42)].image, ds[(3, 42)].image)


def test_unaugmented_crop_matches_inference_crop(h36m: D.Annotations) -> None:
    """Training sees exactly the crop that mocap.model.crop gives at inference for the same box."""
    from mocap.model.crop import crop_person

    for i in range(len(h36m)):
        side = h36m.box_size[i] * 3 / 4  # the SPIN square box, before widening to 192:256
        cx, cy = h36m.center[i]
        box = np.array([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2])
        ref = crop_person(cv2.imread(str(h36m.image_paths[i])), box)
        assert ref.size == pytest.approx(h36m.box_size[i])
        sample = D.make_sample(h36m, i, aug.AugmentParams(), i)
        np.testing.assert_allclose(sample.image, ref.image, atol=1e-4)
