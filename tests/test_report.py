import numpy as np
from PIL import Image

from utad.detector import Prediction
from utad.report import (
    PANEL_GAP,
    _short_name,
    heatmap,
    overlay,
    panel_mosaic,
    save_learning_curve,
    save_panel,
)


def fake_prediction(i: int) -> Prediction:
    rng = np.random.default_rng(i)
    amap = rng.random((24, 24))
    img = rng.random((24, 24, 3))
    return Prediction(f"x/{i}.png", float(amap.max()), True, amap, amap > 0.5, img, img, img, None)


def test_panel_and_curve_are_written(tmp_path):
    preds = [fake_prediction(i) for i in range(3)]
    gts = [np.zeros((24, 24), bool), None, np.ones((24, 24), bool)]
    path = save_panel(preds, tmp_path / "report.png", gts, title="t")
    w, h = Image.open(path).size
    assert w > 600 and h > 300
    hist = {
        "ienet": [{"epoch": 1, "rec": 0.5, "seconds": 1.0}, {"epoch": 2, "rec": 0.3, "seconds": 2.0}],
        "expert": [],
    }
    assert save_learning_curve(hist, tmp_path / "curve.png").stat().st_size > 1000


def test_overlay_marks_predicted_outline_red_and_truth_green():
    p = fake_prediction(0)
    p.mask[:] = False
    p.mask[5:10, 5:10] = True
    gt = np.zeros((24, 24), bool)
    gt[15:20, 15:20] = True
    out = overlay(p, gt)
    assert out.shape == (24, 24, 3) and out.dtype == np.uint8
    assert tuple(out[5, 5]) == (255, 0, 0) and tuple(out[15, 15]) == (0, 255, 0)


def test_panel_mosaic_puts_each_picture_in_its_tile():
    """Rows are images, columns x, m, x^ (m^ left out: no image has it), e, overlay; an image without m gets a
    grey tile; every tile holds exactly the picture at full resolution."""
    preds = [fake_prediction(i) for i in range(2)]
    preds[1].impression = None
    gts = [np.zeros((24, 24), bool), None]
    gts[0][2:6, 2:6] = True
    mosaic = panel_mosaic(preds, gts)
    step = 24 + PANEL_GAP
    assert mosaic.shape == (2 * 24 + PANEL_GAP, 5 * 24 + 4 * PANEL_GAP, 3) and mosaic.dtype == np.uint8

    def tile(r, c):
        return mosaic[r * step : r * step + 24, c * step : c * step + 24].astype(int)

    for r, p in enumerate(preds):
        assert np.abs(tile(r, 0) - np.round(p.image * 255)).max() <= 1
        assert np.abs(tile(r, 2) - np.round(p.reconstruction * 255)).max() <= 1
        assert np.array_equal(tile(r, 3), heatmap(p.anomaly_map))
        assert np.array_equal(tile(r, 4), overlay(p, gts[r]))
    assert np.abs(tile(0, 1) - np.round(preds[0].impression * 255)).max() <= 1
    assert (tile(1, 1) == round(0.85 * 255)).all()  # no m for this image
    assert (mosaic[24 : 24 + PANEL_GAP] == 255).all() and (mosaic[:, 24 : 24 + PANEL_GAP] == 255).all()


def test_long_row_labels_fit_inside_the_panel(tmp_path):
    """One-class images are named like ``fashion-mnist-test:1724``: the row label gets the room it needs (the
    picture's leftmost pixel columns stay white, nothing is cut off) and no stray "/" from an empty folder."""
    preds = [fake_prediction(i) for i in range(2)]
    for p in preds:
        p.path = "fashion-mnist-test:1724"
    img = np.asarray(Image.open(save_panel(preds, tmp_path / "report.png")).convert("L"))
    assert (img[:, :3] == 255).all()
    assert _short_name("fashion-mnist-test:1724") == "fashion-mnist-test:1724"
    assert _short_name("/data/bottle/test/broken_large/003.png") == "broken_large/003"
    assert _short_name("/data/bottle/train/good/003.png#synthetic-stain") == "synthetic-stain/003"
