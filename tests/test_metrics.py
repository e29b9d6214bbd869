import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import f1_score, roc_auc_score

from utad.metrics import aupro, f1_max, image_auroc, iou, pixel_auroc, pro_curve


def slow_aupro(maps, masks, limit=0.3):
    """Independent reference: loop over every distinct threshold, count directly, integrate with np.interp."""
    regions_by_img = []
    for i, m in enumerate(masks):
        lab, n = ndimage.label(m, structure=np.ones((3, 3)))
        regions_by_img += [(i, lab == k) for k in range(1, n + 1)]
    normal = ~masks
    fprs, pros = [0.0], [0.0]
    for t in np.sort(np.unique(maps))[::-1]:
        pred = maps >= t
        fprs.append((pred & normal).sum() / normal.sum())
        pros.append(np.mean([(pred[i] & r).sum() / r.sum() for i, r in regions_by_img]))
    area = 0.0
    for (x0, y0), (x1, y1) in zip(zip(fprs, pros), zip(fprs[1:], pros[1:])):
        if x0 >= limit:
            break
        if x1 > limit:  # clip the segment at the limit, interpolating linearly
            y1 = y0 + (y1 - y0) * (limit - x0) / (x1 - x0)
            x1 = limit
        area += (x1 - x0) * (y0 + y1) / 2
    return area / limit


def random_set(seed, n=4, size=24, quantise=None):
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, size, size), bool)
    for i in range(n - 1):  # last image anomaly-free
        for _ in range(rng.integers(1, 3)):
            y, x = rng.integers(0, size - 6, 2)
            masks[i, y : y + rng.integers(2, 6), x : x + rng.integers(2, 6)] = True
    maps = rng.random((n, size, size)) + 0.6 * masks
    if quantise:
        maps = np.round(maps * quantise) / quantise  # many ties
    return maps, masks


@pytest.mark.parametrize("seed", range(5))
def test_aurocs_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 50)
    labels[:2] = [0, 1]
    scores = rng.random(50) + 0.3 * labels
    assert image_auroc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    maps, masks = random_set(seed)
    assert pixel_auroc(maps, masks) == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()), abs=1e-12)


@pytest.mark.parametrize("seed,quantise", [(0, None), (1, None), (2, 10), (3, 4), (4, None)])
@pytest.mark.parametrize("limit", [0.3, 0.05, 1.0])
def test_aupro_matches_slow_reference(seed, quantise, limit):
    maps, masks = random_set(seed, quantise=quantise)
    assert aupro(maps, masks, limit) == pytest.approx(slow_aupro(maps, masks, limit), abs=1e-9)


def test_aupro_divides_by_limit_not_reached_fpr():
    # A detector that scores region pixels 1, normal pixels uniform in [0, 1): PRO jumps to 1 at FPR 0.
    maps, masks = random_set(7)
    perfect = np.where(masks, 2.0, maps * 0.5)
    assert aupro(perfect, masks) == pytest.approx(1.0)
    inverted = -perfect
    assert aupro(inverted, masks) == pytest.approx(0.0, abs=1e-12)


def test_perfect_and_inverted_detectors():
    _maps, masks = random_set(3)
    perfect = masks.astype(float)
    assert pixel_auroc(perfect, masks) == 1.0
    assert pixel_auroc(-perfect, masks) == 0.0
    labels = np.array([0, 0, 1, 1])
    assert image_auroc([0.1, 0.2, 0.8, 0.9], labels) == 1.0
    assert image_auroc([0.9, 0.8, 0.2, 0.1], labels) == 0.0
    assert iou(perfect, masks, 0.5) == 1.0
    assert iou(-perfect, masks, 0.5) == 0.0


def test_edge_cases_raise_clear_errors():
    maps = np.random.default_rng(0).random((2, 8, 8))
    none = np.zeros((2, 8, 8), bool)
    with pytest.raises(ValueError, match="no anomalous"):
        pixel_auroc(maps, none)
    with pytest.raises(ValueError, match="no anomalous"):
        aupro(maps, none)
    with pytest.raises(ValueError, match="no normal"):
        pixel_auroc(maps, ~none)
    with pytest.raises(ValueError, match="no normal"):
        image_auroc([0.1, 0.2], [1, 1])
    with pytest.raises(ValueError, match="shape"):
        pixel_auroc(maps, none[:1])
    with pytest.raises(ValueError, match="binary"):
        image_auroc([0.1, 0.2], [0, 2])
    with pytest.raises(ValueError, match="IoU undefined"):
        iou(np.zeros((2, 8, 8)), none, 0.5)


def test_iou_pooling():
    masks = np.zeros((2, 4, 4), bool)
    masks[0, :2, :2] = True  # 4 gt pixels in image 0
    maps = np.zeros((2, 4, 4))
    maps[0, :2, :] = 1.0  # 8 predicted in image 0, 4 of them correct
    maps[1, 0, 0] = 1.0  # 1 false positive in the normal image
    assert iou(maps, masks, 0.5) == pytest.approx(4 / 9)  # pooled over the set: 4 / (8 + 1)
    assert iou(maps, masks, 0.5, pooling="image") == pytest.approx((4 / 8 + 0 / 1) / 2)
    assert iou(maps, masks, 0.5, pooling="defect") == pytest.approx(4 / 8)  # the normal image left out
    with pytest.raises(ValueError, match="no defect image"):
        iou(maps, np.zeros_like(masks), 0.5, pooling="defect")


def test_f1_max_matches_brute_force():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 40)
    scores = rng.random(40) + 0.4 * labels
    f1, thr = f1_max(scores, labels)
    brute = max(f1_score(labels, scores >= t) for t in np.unique(scores))
    assert f1 == pytest.approx(brute)
    assert f1_score(labels, scores >= thr) == pytest.approx(f1)


def test_pro_curve_is_monotone_and_complete():
    maps, masks = random_set(2, quantise=5)
    fpr, pro = pro_curve(maps, masks)
    assert fpr[0] == 0 and pro[0] == 0
    assert fpr[-1] == pytest.approx(1) and pro[-1] == pytest.approx(1)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(pro) >= 0)


def test_pro_regions_are_eight_connected():
    """Two blocks touching only at a corner are one region (8-connectivity, MVTec reference), not two."""
    masks = np.zeros((1, 8, 8), bool)
    masks[0, 0:2, 0:2] = True  # 4 pixels
    masks[0, 2:5, 2:5] = True  # 9 pixels, diagonal neighbour of the first block
    maps = np.zeros((1, 8, 8))
    maps[0, 0:2, 0:2] = 1.0  # only the small block is found
    fpr, pro = pro_curve(maps, masks)
    assert fpr[1] == 0 and pro[1] == pytest.approx(4 / 13)  # one region, 4 of its 13 pixels (two: 0.5)


def test_pro_with_a_normal_image_first_and_a_single_2d_map():
    maps, masks = random_set(3)
    flipped_maps, flipped_masks = maps[::-1].copy(), masks[::-1].copy()  # the anomaly-free image comes first
    assert aupro(flipped_maps, flipped_masks) == pytest.approx(slow_aupro(flipped_maps, flipped_masks))
    fpr2, pro2 = pro_curve(maps[0], masks[0])
    fpr3, pro3 = pro_curve(maps[:1], masks[:1])
    assert np.array_equal(fpr2, fpr3) and np.array_equal(pro2, pro3)


def test_area_up_to_the_limit_by_hand():
    from utad.metrics import _area_up_to

    # a point exactly at the limit ends the area there
    assert _area_up_to(np.array([0, 0.3, 1.0]), np.array([0, 0.6, 1.0]), 0.3) == pytest.approx(0.09)
    # between points: y interpolated at the limit (0.4 + 0.6 * 0.1 / 0.3 = 0.6)
    x, y = np.array([0, 0.1, 0.2, 0.5]), np.array([0, 0.2, 0.4, 1.0])
    assert _area_up_to(x, y, 0.3) == pytest.approx(0.01 + 0.03 + 0.05)
    # a curve that ends short of the limit is extended flat from its last point
    x, y = np.array([0, 0.1, 0.2]), np.array([0, 0.5, 1.0])
    assert _area_up_to(x, y, 0.3) == pytest.approx(0.025 + 0.075 + 0.1)


def test_argument_errors_name_the_problem():
    maps, masks = random_set(0)
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match=rf"^fpr_limit must be in \(0, 1\], got {bad}$"):
            aupro(maps, masks, bad)
    assert aupro(maps, masks, 1.0) == pytest.approx(slow_aupro(maps, masks, 1.0))
    with pytest.raises(ValueError, match=r"^scores and labels differ in shape: \(2,\) vs \(3,\)$"):
        image_auroc([0.1, 0.2], [0, 1, 1])
    with pytest.raises(ValueError, match=r"^scores and labels differ in shape"):
        f1_max([0.1, 0.2], [0, 1, 1])
    for fn in (pixel_auroc, pro_curve, lambda a, b: iou(a, b, 0.5)):
        with pytest.raises(
            ValueError, match=r"^maps and masks differ in shape: \(4, 24, 24\) vs \(3, 24, 24\)$"
        ):
            fn(maps, masks[:3])
    with pytest.raises(ValueError, match="^labels must be binary"):
        image_auroc([0.1, 0.2], [0, 2])
    with pytest.raises(ValueError, match="^labels must be binary"):
        f1_max([0.1, 0.2], [0, 2])
    with pytest.raises(ValueError, match="^masks must be binary"):
        pixel_auroc(maps, masks * 2)
    with pytest.raises(ValueError, match="^masks contain no anomalous entries"):
        pro_curve(maps, np.zeros_like(masks))
    with pytest.raises(ValueError, match="^labels contain no normal entries"):
        f1_max([0.1, 0.2], [1, 1])
    with pytest.raises(ValueError, match=r"^pooling='image' needs maps of shape \(N, H, W\)$"):
        iou(maps[0], masks[0], 0.5, pooling="image")
    with pytest.raises(ValueError, match=r"^pooling must be 'set', 'image' or 'defect', got 'pixel'$"):
        iou(maps, masks, 0.5, pooling="pixel")
    with pytest.raises(
        ValueError, match="^IoU undefined: no predicted and no ground-truth anomalous pixel in the set$"
    ):
        iou(np.zeros((2, 4, 4)), np.zeros((2, 4, 4), bool), 0.5, pooling="image")
    with pytest.raises(ValueError, match="^IoU undefined: no defect image in the set$"):
        iou(np.ones((2, 4, 4)), np.zeros((2, 4, 4), bool), 0.5, pooling="defect")


def test_iou_threshold_is_strict_and_empty_images_do_not_count():
    masks = np.zeros((3, 4, 4), bool)
    masks[0, :2, :2] = True
    maps = np.zeros((3, 4, 4))
    maps[0, :2, :2] = 0.5  # exactly alpha: not predicted (e > alpha, Eq. 9)
    maps[0, 2, 2] = 0.9
    assert iou(maps, masks, 0.5) == 0.0
    maps[0, :2, :2] = 0.51
    assert iou(maps, masks, 0.5) == pytest.approx(4 / 5)
    # image 1 and 2 are empty (no prediction, no ground truth): left out of the image mean, not counted as 0 or 1
    assert iou(maps, masks, 0.5, pooling="image") == pytest.approx(4 / 5)
    maps[1, 0, 0] = 1.0  # a false positive in a normal image: a per-image IoU of 0 joins the image mean
    assert iou(maps, masks, 0.5, pooling="image") == pytest.approx((4 / 5 + 0) / 2)


def test_f1_max_with_a_normal_image_on_top_and_an_f1_at_precision_plus_recall_one():
    """The top-scored image is normal (precision = recall = 0 there: F1 0, not NaN), and the best F1 is at
    precision 0.5, recall 0.5 (p + r = 1 exactly)."""
    labels = np.zeros(100, int)
    labels[[1, 99]] = 1
    scores = np.linspace(1.0, 0.0, 100)  # image 0 (normal) first, image 1 (defect) second, image 99 last
    f1, thr = f1_max(scores, labels)
    assert f1 == pytest.approx(0.5) and thr == pytest.approx(scores[1])


def test_iou_set_message_is_exact():
    with pytest.raises(
        ValueError, match="^IoU undefined: no predicted and no ground-truth anomalous pixel in the set$"
    ):
        iou(np.zeros((2, 4, 4)), np.zeros((2, 4, 4), bool), 0.5)
