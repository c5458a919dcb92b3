"""HMR2.0 preprocessing on real COCO photos, and the Predictor (tiny models, CPU)."""

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from mocap.errors import MocapError
from mocap.model.build import build_model, featup_deformable, hmr2
from mocap.model.checkpoint import save_checkpoint
from mocap.model.crop import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    crop_people,
    crop_person,
)
from mocap.model.hmr import HMR
from mocap.model.predictor import Predictor, SMPLParams

# Person boxes found by the YOLO test detector (see conftest.yolo_weights) in the shared photos.
BATTER = ("coco_val2014_192.jpg", [264.0, 177.0, 384.0, 421.0])  # 244 px tall: no blur
STANDING = ("coco_val2014_241.jpg", [101.0, 16.0, 336.0, 640.0])  # 624 px tall: blurred


def _image(shared_data: Path, name: str) -> np.ndarray:
    image = cv2.imread(str(shared_data / "images" / name))
    assert image is not None
    return image


def _denormalise(crop: np.ndarray) -> np.ndarray:
    """(3, 256, 192) normalised RGB -> (256, 192, 3) BGR float in 0..255."""
    rgb = crop.transpose(1, 2, 0) * (255 * IMAGENET_STD) + 255 * IMAGENET_MEAN
    return rgb[:, :, ::-1]


def _bilinear(image: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Sample (H, W, 3) at float pixel centres (N, 2) (x, y)."""
    x, y = xy[:, 0], xy[:, 1]
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    img = image.astype(np.float64)
    return (
        img[y0, x0] * (1 - fx) * (1 - fy)
        + img[y0, x0 + 1] * fx * (1 - fy)
        + img[y0 + 1, x0] * (1 - fx) * fy
        + img[y0 + 1, x0 + 1] * fx * fy
    )


# ---- 4D-Humans' ViTDetDataset preprocessing, written out plainly (the reference) ---------------
REF_MEAN = 255.0 * np.array([0.485, 0.456, 0.406])
REF_STD = 255.0 * np.array([0.229, 0.224, 0.225])


def _reference_crop(image_bgr: np.ndarray, box_xyxy: list[float]) -> np.ndarray:
    """HMR2.0 demo crop, step by step as 4D-Humans does it -> (3, 256, 192) normalised RGB."""
    from skimage.filters import gaussian

    boxes = np.array([box_xyxy]).astype(np.float32)  # the demo keeps boxes in float32
    center = (boxes[:, 2:4] + boxes[:, 0:2]) / 2.0
    scale = (boxes[:, 2:4] - boxes[:, 0:2]) / 200.0
    w, h = scale[0] * 200
    if h / w < 256 / 192:  # expand to the 192:256 aspect, never shrink
        w_new, h_new = w, max(w * 256 / 192, h)
    else:
        w_new, h_new = max(h * 192 / 256, w), h
    bbox_size = np.array([w_new, h_new]).max()
    img = image_bgr.copy()
    downsampling = bbox_size * 1.0 / 256 / 2.0
    if downsampling > 1.1:  # anti-alias the whole frame (float64 result is what gets warped)
        img = gaussian(img, sigma=(downsampling - 1) / 2, channel_axis=2, preserve_range=True)
    src_center = np.zeros(2)
    src_center[:] = center[0]
    src = np.zeros((3, 2), np.float32)
    src[0] = src_center
    src[1] = src_center + np.array([0, bbox_size * 0.5], np.float32)
    src[2] = src_center + np.array([bbox_size * 0.5, 0], np.float32)
    dst = np.array([[128, 128], [128, 256], [256, 128]], np.float32)
    trans = cv2.getAffineTransform(np.float32(src), np.float32(dst))
    patch = cv2.warpAffine(
        img, trans, (256, 256), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT
    )
    chw = np.transpose(patch[:, :, ::-1].copy(), (2, 0, 1)).astype(np.float32)
    for c in range(3):
        chw[c] = (chw[c] - REF_MEAN[c]) / REF_STD[c]
    return chw[:, :, 32:224]  # HMR2.0's model slices its 256x256 input so


@pytest.fixture(scope="module")
def photo_boxes(shared_data: Path, yolo_weights: Path) -> dict[str, np.ndarray]:
    """Every shared photo -> the test detector's person boxes (float32, as a detector gives)."""
    from mocap.pipeline.detect import PersonDetector

    detector = PersonDetector(yolo_weights, conf=0.4, device="cpu")
    names = sorted(p.name for p in (shared_data / "images").glob("*.jpg"))
    found = detector.detect([_image(shared_data, n) for n in names])
    return {n: d.boxes for n, d in zip(names, found, strict=True)}


def test_crops_identical_to_4d_humans(shared_data: Path, photo_boxes: dict) -> None:
    sizes = []
    for name, boxes in photo_boxes.items():
        image = _image(shared_data, name)
        for box in boxes:
            crop = crop_person(image, box)
            want = _reference_crop(image, box.tolist())
            assert crop.image.shape == (3, 256, 192) and crop.image.dtype == np.float32
            assert np.abs(crop.image - want).max() < 1e-4, (name, box)
            sizes.append(crop.size)
    assert len(sizes) >= 15
    assert min(sizes) < 512 * 1.1 < max(sizes)  # both the plain and the anti-aliased path


def test_crops_identical_to_4d_humans_at_odd_boxes(shared_data: Path) -> None:
    """Boxes half off a 1080p frame, tiny, huge and strongly blurred."""
    import av

    with av.open(str(shared_data / "videos" / "walking_crowd_1080p.mp4")) as container:
        frame = next(container.decode(video=0)).to_ndarray(format="bgr24")
    rng = np.random.default_rng(0)
    for _ in range(12):
        x1, y1 = rng.uniform(-300, 1900, 2)
        w, h = rng.uniform(5, 2500, 2)
        box = [x1, y1, x1 + w, y1 + h]
        got = crop_person(frame, np.array(box)).image
        assert np.abs(got - _reference_crop(frame, box)).max() < 1e-4, box


def test_crop_is_centred_and_inverse_mapping_hits_image_points(shared_data: Path) -> None:
    name, box = BATTER
    image = _image(shared_data, name)
    crop = crop_person(image, np.array(box))
    np.testing.assert_allclose(crop.center, [324.0, 299.0])
    assert crop.size == pytest.approx(244.0)  # taller than 192:256: height kept
    # The crop centre is the box centre.
    np.testing.assert_allclose(crop.to_image(np.array([96.0, 128.0])), crop.center)
    # Corners and inner points of the crop show the image pixels the inverse mapping names.
    uv = np.array([[0, 0], [191, 0], [0, 255], [191, 255], [96, 128], [37, 201], [150, 20]], float)
    xy = crop.to_image(uv)
    want = _bilinear(image, xy)
    got = _denormalise(crop.image)[uv[:, 1].astype(int), uv[:, 0].astype(int)]
    # OpenCV's 1/32-pixel fixed-point weights, and the uint8 crop 4D-Humans rounds to
    np.testing.assert_allclose(got, want, atol=1.1)
    assert np.abs(got - _bilinear(image, xy + [1.0, 0.0])).max() > 5  # a 1 px error would show
    # The corners land on the enlarged 192:256 box around the person.
    half = np.array([96, 128]) * crop.size / 256
    np.testing.assert_allclose(xy[0], crop.center - half)
    np.testing.assert_allclose(crop.to_crop(xy), uv)


def test_crop_outside_image_is_black_and_box_aspect_enlarged(shared_data: Path) -> None:
    image = _image(shared_data, BATTER[0])
    crop = crop_person(image, np.array([-200.0, 100.0, 20.0, 200.0]))  # wide, mostly off-image
    assert crop.size == pytest.approx(220 * 256 / 192)  # width drives the size, never shrunk
    black = -IMAGENET_MEAN / IMAGENET_STD  # a zero pixel, normalised (RGB)
    np.testing.assert_allclose(crop.image[:, 128, 10], black, atol=1e-5)
    assert np.abs(crop.image[:, 128, 191] - black).max() > 0.1  # its right edge touches the image


def test_crop_people_stacks_and_rejects_bad_input(shared_data: Path) -> None:
    image = _image(shared_data, BATTER[0])
    batch = crop_people(image, np.array([BATTER[1], [430, 227, 523, 475]]))
    assert batch.images.shape == (2, 3, 256, 192)
    np.testing.assert_array_equal(batch.images[0], crop_person(image, np.array(BATTER[1])).image)
    assert crop_people(image, np.zeros((0, 4))).images.shape == (0, 3, 256, 192)
    with pytest.raises(MocapError, match="empty"):
        crop_person(image, np.array([10.0, 10.0, 10.0, 50.0]))
    with pytest.raises(MocapError, match="uint8"):
        crop_person(image.astype(np.float32), np.array(BATTER[1]))


@pytest.fixture(scope="module")
def tiny_model(shared_data: Path) -> HMR:
    torch.manual_seed(0)
    means = shared_data / "spin_npz" / "smpl_mean_params.npz"
    return build_model(featup_deformable("tiny", 2), means)  # the default variant, cheap factor


def _check_params(p: SMPLParams, n: int) -> None:
    assert p.global_orient.shape == (n, 3, 3) and p.body_pose.shape == (n, 23, 3, 3)
    assert p.betas.shape == (n, 10) and p.cam_crop.shape == (n, 3) and p.transl.shape == (n, 3)
    rot = np.concatenate([p.global_orient[:, None], p.body_pose], 1)
    eye = np.broadcast_to(np.eye(3), rot.shape)
    np.testing.assert_allclose(rot @ rot.transpose(0, 1, 3, 2), eye, atol=1e-4)  # fp32
    np.testing.assert_allclose(np.linalg.det(rot), 1.0, atol=1e-4)


def test_predictor_on_real_photo(shared_data: Path, tiny_model: HMR) -> None:
    image = _image(shared_data, STANDING[0])
    boxes = np.array([STANDING[1], [286, 246, 412, 610], [0, 239, 221, 630]])
    one = Predictor(tiny_model, device="cpu", batch_size=1).predict(image, boxes)
    many = Predictor(tiny_model, device="cpu", batch_size=8).predict(image, boxes)
    _check_params(one, 3)
    np.testing.assert_allclose(one.body_pose, many.body_pose, atol=1e-5)
    # HMR2.0 camera: f = 5000/256 * max(W, H); tz = 2 f / (box_size * s).
    assert one.focal_length == pytest.approx(5000 / 256 * 640)
    sizes = crop_people(image, boxes).sizes
    np.testing.assert_allclose(
        one.transl[:, 2], 2 * one.focal_length / (sizes * one.cam_crop[:, 0]), rtol=1e-5
    )
    # A known focal length scales depth and nothing else.
    fixed = Predictor(tiny_model, device="cpu", focal_length=1000.0).predict(image, boxes)
    assert fixed.focal_length == 1000.0
    np.testing.assert_allclose(fixed.transl[:, 2] / one.transl[:, 2], 1000 / one.focal_length, 1e-5)
    np.testing.assert_allclose(fixed.transl[:, :2], one.transl[:, :2], atol=1e-5)
    empty = Predictor(tiny_model, device="cpu").predict(image, np.zeros((0, 4)))
    assert len(empty) == 0 and empty.transl.shape == (0, 3)


def test_predictor_bf16_and_fallbacks(
    shared_data: Path,
    tiny_model: HMR,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import mocap.device

    monkeypatch.setattr(mocap.device, "_warned", set())  # fallback warnings are said once
    image = _image(shared_data, BATTER[0])
    boxes = np.array([BATTER[1]])
    ref = Predictor(tiny_model, device="cpu").predict(image, boxes)
    bf16 = Predictor(tiny_model, device="cpu", precision="bf16")
    backbone = bf16.model.backbone
    assert backbone.get_parameter("blocks.1.mlp.fc2.weight").dtype == torch.bfloat16
    assert backbone.pos_embed.dtype == torch.float32  # residual stream and norms stay fp32
    assert backbone.get_parameter("blocks.0.norm1.weight").dtype == torch.float32
    assert next(bf16.model.head.parameters()).dtype == torch.float32
    out = bf16.predict(image, boxes)
    _check_params(out, 1)
    assert out.transl.dtype == np.float32
    np.testing.assert_allclose(out.betas, ref.betas, atol=0.05)
    with caplog.at_level(logging.WARNING):
        fp16 = Predictor(tiny_model, device="cpu", precision="fp16")
    assert fp16.dtype != torch.float16 and "fp16" in caplog.text
    tiny_model.float()  # the Predictors above cast the shared backbone
    with pytest.raises(MocapError, match="precision"):
        Predictor(tiny_model, device="cpu", precision="int4")
    if not torch.cuda.is_available():
        with pytest.raises(MocapError, match="no CUDA"):
            Predictor(tiny_model, device="cuda")


def test_predictor_from_mocap_checkpoint(tmp_path: Path, shared_data: Path) -> None:
    torch.manual_seed(1)
    model = build_model(hmr2("tiny"))
    path = tmp_path / "hmr2_tiny.safetensors"
    save_checkpoint(path, model)
    image = _image(shared_data, BATTER[0])
    boxes = np.array([BATTER[1]])
    direct = Predictor(model, device="cpu").predict(image, boxes)
    loaded = Predictor.from_checkpoint(path, device="cpu").predict(image, boxes)
    # Same weights (bit-exact, see test_checkpoint); kernels may round differently by alignment.
    np.testing.assert_allclose(direct.body_pose, loaded.body_pose, rtol=0, atol=1e-6)
    np.testing.assert_allclose(direct.transl, loaded.transl, rtol=1e-6)
