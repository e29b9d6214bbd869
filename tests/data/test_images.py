import numpy as np
import pytest
from PIL import Image

from utad.data.images import load_image, load_mask
from utad.errors import DataError


@pytest.mark.parametrize(
    "mode,array",
    [
        ("RGB", np.full((20, 30, 3), 128, np.uint8)),
        ("L", np.full((20, 30), 128, np.uint8)),
        ("RGBA", np.full((20, 30, 4), 128, np.uint8)),
        ("I;16", np.full((20, 30), 32896, np.uint16)),
    ],
)
def test_modes_convert_and_resize(tmp_path, mode, array):
    path = tmp_path / "img.png"
    Image.fromarray(array).save(path)
    out = load_image(path, 16, channels=3)
    assert out.shape == (16, 16, 3) and out.dtype == np.float32
    assert np.allclose(out, 128 / 255, atol=1e-3)
    assert load_image(path, (8, 12), channels=1).shape == (8, 12, 1)


def test_palette_image(tmp_path):
    img = Image.fromarray(np.full((10, 10, 3), (255, 0, 0), np.uint8)).convert("P")
    img.save(tmp_path / "p.png")
    out = load_image(tmp_path / "p.png", 10)
    assert np.allclose(out[..., 0], 1.0) and np.allclose(out[..., 1:], 0.0)


def test_mask_binarised_after_resize(tmp_path):
    m = np.zeros((40, 40), np.uint8)
    m[:20] = 255
    Image.fromarray(m).save(tmp_path / "m.png")
    out = load_mask(tmp_path / "m.png", 10)
    assert out.dtype == bool and out[:5].all() and not out[5:].any()


def test_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match="missing.png: file not found"):
        load_image(tmp_path / "missing.png", 8)
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(DataError, match="notes.png: not an image file"):
        load_image(tmp_path / "notes.png", 8)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(
        tmp_path / "t.png"
    )
    data = (tmp_path / "t.png").read_bytes()
    (tmp_path / "trunc.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="trunc.png: corrupt or truncated"):
        load_image(tmp_path / "trunc.png", 8)


def test_exif_orientation_is_honoured(tmp_path):
    """A JPEG stored sideways with EXIF orientation 6 (rotate 90 degrees clockwise to view) is read upright."""
    import numpy as np
    from PIL import Image

    from utad.data.images import load_image

    stored = np.zeros((20, 40, 3), np.uint8)  # 40 wide, 20 high as stored
    stored[:, :20] = 255  # left half white
    img = Image.fromarray(stored)
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "sideways.jpg"
    img.save(path, exif=exif, quality=95)
    arr = load_image(path, None)
    assert arr.shape == (40, 20, 3)  # upright: 20 wide, 40 high
    assert arr[:20].mean() > 0.9 and arr[20:].mean() < 0.1  # the white half is now on top
