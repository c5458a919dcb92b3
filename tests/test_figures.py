"""Paper figures: feature PCA and sampling points, as pure functions and through `mocap figures`."""

import cv2
import numpy as np
import pytest
import torch

from mocap.cli import main
from mocap.errors import MocapError
from mocap.model.figures import (
    feature_pca_figure,
    joint_pca,
    level_shifts,
    locations_to_pixels,
    sampling_points_figure,
    write_png,
)

PHOTO = "coco_val2014_192.jpg"


@pytest.fixture(scope="module")
def tiny_checkpoints(tmp_path_factory):
    from mocap.model.build import build_model, model_config
    from mocap.model.checkpoint import save_checkpoint

    folder = tmp_path_factory.mktemp("ckpt")
    paths = {}
    for variant in ("featup-deformable", "hmr2"):
        torch.manual_seed(0)
        model = build_model(model_config(variant, "tiny"))
        paths[variant] = folder / f"{variant}.safetensors"
        save_checkpoint(paths[variant], model)
    return paths


def _crop_rgb(shared_data) -> np.ndarray:
    from mocap.model.crop import crop_person
    from mocap.model.figures import denormalise

    image = cv2.imread(str(shared_data / "images" / PHOTO))
    h, w = image.shape[:2]
    return denormalise(crop_person(image, np.array([0, 0, w, h], np.float64)).image)


def test_joint_pca_gives_matching_colours_for_matching_features(shared_data) -> None:
    crop = _crop_rgb(shared_data)
    # features that are a linear function of the (pooled) photo: the x4 map is the same
    # function at 4x resolution, so both PCA images must look alike
    rng = np.random.default_rng(0)
    mix = rng.normal(size=(16, 3))
    high_img = cv2.resize(crop, (48, 64), interpolation=cv2.INTER_AREA).astype(np.float64)
    low_img = cv2.resize(crop, (12, 16), interpolation=cv2.INTER_AREA).astype(np.float64)
    high, low = (mix @ im.reshape(-1, 3).T for im in (high_img, low_img))
    pca_low, pca_high = joint_pca([low.reshape(16, 16, 12), high.reshape(16, 64, 48)])
    assert pca_low.shape == (16, 12, 3) and pca_high.shape == (64, 48, 3)
    assert pca_low.min() >= 0 and pca_high.max() <= 1
    pooled = cv2.resize(pca_high, (12, 16), interpolation=cv2.INTER_AREA)
    assert np.abs(pooled - pca_low).mean() < 0.05
    assert pca_high.std() > 0.1  # not a flat image


def test_feature_figure_and_png_sizes(shared_data, tmp_path) -> None:
    crop = _crop_rgb(shared_data)
    rng = np.random.default_rng(1)
    fig = feature_pca_figure(crop, rng.normal(size=(8, 16, 12)), rng.normal(size=(8, 64, 48)))
    assert fig.shape == (256, 3 * 192, 3) and fig.dtype == np.uint8
    np.testing.assert_array_equal(fig[:, :192], crop)
    path = write_png(tmp_path / "out" / "f.png", fig, scale=2)
    assert cv2.imread(str(path)).shape == (512, 3 * 384, 3)
    assert [p.name for p in path.parent.iterdir()] == ["f.png"]  # no temporary left behind


def test_native_levels_are_shifted_by_the_patch_padding() -> None:
    assert level_shifts([(16, 12), (64, 48)]) == [-2.0, 0.0]
    # centre of native cell (i=3, j=5): x = (5 + 0.5) / 12, y = (3 + 0.5) / 16
    loc = np.array([[(5.5 / 12, 3.5 / 16)], [(0.5, 0.5)]])  # (L=2, P=1, 2)
    px = locations_to_pixels(loc, [-2.0, 0.0], (256, 192))
    np.testing.assert_allclose(
        px[0, 0], [16 * 5 + 5.5, 16 * 3 + 5.5]
    )  # patch covers [16j-2, 16j+14)
    np.testing.assert_allclose(px[1, 0], [95.5, 127.5])


def test_sampling_figure_marks_the_strongest_point(shared_data) -> None:
    crop = _crop_rgb(shared_data)
    locations = np.full((1, 1, 1, 2, 2), 0.1)
    locations[0, 0, 0, 1] = (0.75, 0.5)
    weights = np.array([[[[0.1, 0.9]]]])
    fig = sampling_points_figure(crop, locations, weights, [0.0], scale=2)
    assert fig.shape == (512, 384, 3)
    x, y = round(0.75 * 192 * 2 - 0.5), round(0.5 * 256 * 2 - 0.5)
    yellow = cv2.applyColorMap(np.array([[255]], np.uint8), cv2.COLORMAP_VIRIDIS)[0, 0, ::-1]
    np.testing.assert_allclose(fig[y, x], yellow, atol=40)


def test_figures_command_writes_both_pngs(shared_data, tiny_checkpoints, tmp_path, capsys) -> None:
    image = shared_data / "images" / PHOTO
    code = main(
        [
            "figures",
            str(image),
            "--checkpoint",
            str(tiny_checkpoints["featup-deformable"]),
            "--box",
            "50",
            "20",
            "400",
            "470",
            "-o",
            str(tmp_path),
            "--scale",
            "2",
        ]
    )
    assert code == 0
    features = cv2.imread(str(tmp_path / f"{image.stem}_features.png"))
    sampling = cv2.imread(str(tmp_path / f"{image.stem}_sampling.png"))
    assert features.shape == (512, 3 * 384, 3)
    assert sampling.shape == (512, 384, 3)
    assert sampling.std() > 10 and features.std() > 10
    assert str(tmp_path) in capsys.readouterr().out


def test_figures_command_user_errors(shared_data, tiny_checkpoints, tmp_path, capsys) -> None:
    image = shared_data / "images" / PHOTO
    code = main(
        ["figures", str(image), "--checkpoint", str(tiny_checkpoints["hmr2"]), "-o", str(tmp_path)]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert "deformable" in err and "Traceback" not in err and err.count("\n") == 1
    assert (
        main(["figures", str(tmp_path / "nope.jpg"), "--checkpoint", str(tiny_checkpoints["hmr2"])])
        == 1
    )
    assert "cannot read image" in capsys.readouterr().err
    blocker = tmp_path / "a-file"
    blocker.write_bytes(b"")
    with pytest.raises(MocapError, match="writable"):
        write_png(blocker / "x.png", np.zeros((4, 4, 3), np.uint8))
