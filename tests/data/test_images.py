"""Image folders: labels from sorted subfolders, preprocessing numerics, layouts, spec files, errors."""

import json

import numpy as np
import pytest
from PIL import Image

from edgekit.data import load_data
from edgekit.errors import UserError
from edgekit.spec import TensorSpec

NCHW = (TensorSpec("image", ("batch", 3, 4, 4), "float32"),)
GRAY = (TensorSpec("image", ("batch", 1, 4, 4), "float32"),)


def _save(path, value: int, size=(4, 4), mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    color = (value, value // 2, 255 - value) if mode == "RGB" else value
    Image.new(mode, size, color).save(path)


@pytest.fixture()
def classes(tmp_path):
    """zebra/ (2 images) and ant/ (1 image): sorted names make ant=0, zebra=1."""
    _save(tmp_path / "imgs" / "zebra" / "a.png", 200)
    _save(tmp_path / "imgs" / "zebra" / "b.png", 100)
    _save(tmp_path / "imgs" / "ant" / "c.png", 50)
    return tmp_path / "imgs"


def test_labels_come_from_sorted_subfolders(classes):
    data = load_data(f"images:{classes}", NCHW)
    assert list(data.labels) == [0, 1, 1]
    assert "0=ant" in data.origin and "1=zebra" in data.origin
    assert data.arrays["image"].shape == (3, 1, 3, 4, 4)


def test_scale_mean_std_numerics(tmp_path, classes):
    spec = tmp_path / "data.yaml"
    spec.write_text(f"images: {classes}\nmean: [0.5, 0.25, 0.0]\nstd: [0.5, 0.25, 2.0]\n")
    image = load_data(spec, NCHW).arrays["image"][0, 0]  # ant: (50, 25, 205)
    expected = (np.array([50, 25, 205]) / 255 - np.array([0.5, 0.25, 0.0])) / np.array([0.5, 0.25, 2.0])
    assert np.allclose(image[:, 0, 0], expected, atol=1e-6)


def test_nhwc_layout_grayscale_and_uint8(tmp_path):
    _save(tmp_path / "flat" / "x.png", 77, mode="L")
    specs = (TensorSpec("pixels", (1, 4, 4, 1), "uint8"),)
    spec = tmp_path / "d.json"
    spec.write_text(json.dumps({"images": "flat", "scale": 1.0}))
    data = load_data(spec, specs)
    assert data.labels is None
    assert data.arrays["pixels"].shape == (1, 1, 4, 4, 1) and data.arrays["pixels"].dtype == np.uint8
    assert (data.arrays["pixels"] == 77).all()


def test_resize_then_center_crop(tmp_path):
    image = np.zeros((8, 16), np.uint8)
    image[:, 6:10] = 255  # a bright center band, 4 px wide
    (tmp_path / "wide").mkdir()
    Image.fromarray(image).save(tmp_path / "wide" / "w.png")
    spec = tmp_path / "d.yaml"
    spec.write_text("images: wide\nresize: 4\n")
    pixels = load_data(spec, GRAY).arrays["image"][0, 0, 0]  # 8x16 → 4x8 → center 4x4
    assert pixels[:, 1:3].min() > 0.8 and pixels[:, [0, 3]].max() < 0.3  # bilinear blurs the band's edges a little


def test_missing_folder_and_no_images(tmp_path):
    with pytest.raises(UserError, match="image folder not found"):
        load_data(f"images:{tmp_path / 'nope'}", NCHW)
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(UserError, match="no images"):
        load_data(f"images:{tmp_path / 'empty'}", NCHW)


def test_mismatched_spec_errors(tmp_path, classes):
    with pytest.raises(UserError, match="mode L gives 1 channel"):
        bad = tmp_path / "l.yaml"
        bad.write_text(f"images: {classes}\nmode: L\n")
        load_data(bad, NCHW)
    with pytest.raises(UserError, match="size \\[8, 8\\] does not fit"):
        bad = tmp_path / "s.yaml"
        bad.write_text(f"images: {classes}\nsize: [8, 8]\n")
        load_data(bad, NCHW)
    with pytest.raises(UserError, match="mean has 2 values"):
        bad = tmp_path / "m.yaml"
        bad.write_text(f"images: {classes}\nmean: [0.1, 0.2]\n")
        load_data(bad, NCHW)
    with pytest.raises(UserError, match="unknown parameter 'crop'"):
        bad = tmp_path / "c.yaml"
        bad.write_text(f"images: {classes}\ncrop: 4\n")
        load_data(bad, NCHW)
    with pytest.raises(UserError, match="symbolic height/width"):
        load_data(f"images:{classes}", (TensorSpec("image", ("batch", 3, "h", "w"), "float32"),))


def test_mixed_layout_is_refused(classes):
    _save(classes / "stray.png", 10)
    with pytest.raises(UserError, match="both at its top level and in class subfolders"):
        load_data(f"images:{classes}", NCHW)
