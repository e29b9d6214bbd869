import json

import numpy as np
import pytest

from conftest import BOTTLE, save
from utad.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_help(capsys):
    code, out, _ = run(capsys)
    assert code == 0 and "data" in out


def test_train_help_lists_every_shipped_preset(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "1000")  # argparse would wrap the list, and may break a name at its hyphen
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    for name in ("cpu-fast", "cpu-mvtec", "cpu-ssim", "oneclass-fast", "paper-mvtec", "feature-knn"):
        assert name in out


def test_inspect_bottle(capsys):
    code, out, _ = run(capsys, "data", "inspect", str(BOTTLE), "--json")
    report = json.loads(out)
    assert code == 0 and report["problems"] == []
    assert report["counts"]["train"] == {"good": 209}
    assert report["counts"]["test"] == {
        "broken_large": 20,
        "broken_small": 22,
        "contamination": 21,
        "good": 20,
    }
    assert report["n_masks"] == 63 and report["sizes"] == {"256x256": 292} and report["modes"] == {"RGB": 292}
    code, out, _ = run(capsys, "data", "inspect", str(BOTTLE))
    assert "masks: 63" in out and "problems: none" in out


def test_inspect_reports_every_problem(capsys, tiny_mvtec):
    (tiny_mvtec / "test" / "crack" / "notes.txt").write_text("hi")
    (tiny_mvtec / "train" / "good" / "002.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (tiny_mvtec / "ground_truth" / "crack" / "001_mask.png").unlink()
    save(tiny_mvtec / "ground_truth" / "crack" / "000_mask.png", np.zeros((10, 10), np.uint8))
    save(tiny_mvtec / "ground_truth" / "crack" / "007_mask.png", np.zeros((32, 32), np.uint8))
    code, out, _ = run(capsys, "data", "inspect", str(tiny_mvtec), "--json")
    problems = "\n".join(json.loads(out)["problems"])
    assert code == 1
    assert "notes.txt: not an image file" in problems
    assert "002.png: corrupt or truncated image" in problems or "002.png: not an image file" in problems
    assert "test/crack/001.png: defect image has no mask" in problems
    assert "000_mask.png: mask size 10x10 differs from its image (32x32)" in problems
    assert "007_mask.png: mask has no matching test image" in problems


def test_user_errors_are_one_line_without_traceback(capsys, tmp_path):
    code, _out, err = run(capsys, "data", "inspect", str(tmp_path / "missing"))
    assert code == 2 and err.strip() == f"utad: error: {tmp_path / 'missing'}: folder not found"
    (tmp_path / "empty").mkdir()
    code, _, err = run(capsys, "data", "inspect", str(tmp_path / "empty"))
    assert code == 2 and "not an MVTec AD category folder" in err and "Traceback" not in err


def test_folder_source_without_good_test_images_is_one_line(tmp_path, capsys):
    """Image AUROC needs normal test images: a folder source without test_good says so (exit 2)."""
    rng = np.random.default_rng(0)
    for i in range(12):
        save(tmp_path / "good" / f"{i}.png", rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
    for i in range(2):
        save(tmp_path / "bad" / f"{i}.png", rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
    from detector_runs import hand_made_run

    run = tmp_path / "run"  # untrained networks: the error comes before any score matters
    folder = ["data.source=folder", f"data.path={tmp_path / 'good'}", f"data.bad=[{tmp_path / 'bad'}]"]
    hand_made_run(run, [*folder, "data.masks=false"])
    assert main(["test", str(run), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "the test set has no normal images" in err and "test_good" in err and "Traceback" not in err


def test_a_gpu_that_is_not_there_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    from detector_runs import hand_made_run

    hand_made_run(tmp_path / "run")
    for argv in (["test", str(tmp_path / "run")], ["predict", str(tmp_path / "run"), str(tmp_path)]):
        code, _, err = run(capsys, *argv, "--out", str(tmp_path / "out"), "--device", "cuda", "--quiet")
        assert (
            code == 2
            and err.strip()
            == "utad: error: device cuda: torch sees 0 CUDA device(s) (use --device cpu or auto)"
        )
        assert not (tmp_path / "out").exists()  # refused before anything was written
