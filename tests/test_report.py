import numpy as np
from PIL import Image

from utad.detector import Prediction
from utad.report import overlay, save_learning_curve, save_panel


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
