import numpy as np
import pytest

from utad.data import list_mvtec
from utad.data.demo import DEFECT_TYPES, generate_demo, render_defect, write_demo
from utad.data.images import load_mask


@pytest.mark.parametrize("kind", DEFECT_TYPES)
def test_mask_covers_exactly_the_changed_pixels(kind):
    rng = np.random.default_rng(0)
    clean = next(generate_demo(seed=1, n_train=1)).image
    for _ in range(10):
        image, mask = render_defect(clean, kind, rng)
        changed = (image != clean).any(axis=-1)
        assert mask.any()
        assert np.array_equal(changed, mask)


def test_written_demo_round_trips(tmp_path):
    items = list(generate_demo(seed=5, n_train=4, n_test_good=2, n_test_per_defect=2))
    root = write_demo(tmp_path / "demo", seed=5, n_train=4, n_test_good=2, n_test_per_defect=2)
    listing = list_mvtec(root)
    assert len(listing.train) == 4 and len(listing.test) == 2 + 2 * len(DEFECT_TYPES)
    for item in items:
        if item.mask is None:
            continue
        changed = (item.image != item.clean).any(axis=-1)
        on_disk = load_mask(root / "ground_truth" / item.defect_type / f"{item.name}_mask.png", None)
        assert np.array_equal(on_disk, changed)


def test_demo_is_deterministic_for_a_seed():
    a = list(generate_demo(seed=2, n_train=3, n_test_good=2, n_test_per_defect=1))
    b = list(generate_demo(seed=2, n_train=3, n_test_good=2, n_test_per_defect=1))
    assert all(np.array_equal(x.image, y.image) for x, y in zip(a, b))
    c = list(generate_demo(seed=3, n_train=3, n_test_good=2, n_test_per_defect=1))
    assert not np.array_equal(a[0].image, c[0].image)
