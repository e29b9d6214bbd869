"""Fitting the baselines into a run folder with the same layout and checkpoint contract as UTAD's training.

The checkpoint holds ``stage`` (``ae`` while the autoencoder trains, then ``done``), the method's learned state
under ``model``, the config, the backbone, the normalisation statistics and the history; written atomically.
The autoencoder trains epoch by epoch through the same loop as UTAD's stages (Fabric, per-epoch checkpoints,
``--resume``, NaN stop, ``train.max_minutes``). The feature methods fit in one pass over the training images
(a minute or two) and write their checkpoint once, at the end: an interrupted fit leaves no checkpoint and is
run again (``--overwrite``; the benchmark runner does this by itself).
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from utad.checkpoint import save_checkpoint
from utad.config import UtadConfig, to_dict
from utad.data.bundle import DataBundle
from utad.errors import UtadError
from utad.io import write_json
from utad.nets.perceptual import BackboneInfo

log = logging.getLogger("utad")


def train_baseline(
    cfg: UtadConfig,
    run_dir: Path,
    state: dict[str, Any] | None,
    overwrite: bool,
    progress: bool,
    data: DataBundle | None,
) -> Path:
    """Fit ``cfg.method`` (not ``utad``) into ``run_dir``; ``state`` is the checkpoint when resuming."""
    from utad.train import open_run, seed_everything

    resume = state is not None
    if str(cfg.train.devices) != "1" or cfg.train.num_nodes != 1:
        raise UtadError(
            f"{cfg.method}: training on several devices is implemented for utad only; the baselines train in one "
            "process (set train.devices=1)"
        )
    seed_everything(cfg.seed)
    if cfg.method in ("ae-l2", "ae-ssim"):
        info = BackboneInfo("none", "-", False, [])
        data = open_run(cfg, run_dir, resume, overwrite, data, cfg.ae.batch_size, "ae.batch_size")
        det, model_state, history = _fit_autoencoder(cfg, run_dir, data, state, info, progress)
    else:
        from utad.methods.features import build_features

        features, info = build_features(cfg)  # a missing weight file fails before the run folder is made
        if not info.pretrained:
            log.warning("backbone %s has RANDOM weights: not a pretrained-feature method", info.name)
        data = open_run(cfg, run_dir, resume, overwrite, data, 1)
        log.info("backbone %s (%s), layers %s", info.name, info.weights, info.layers)
        det, model_state, history = _fit_features(cfg, features, data, progress)
    det.eval()
    norm = det.calibrate(DataLoader(data.val, batch_size=cfg.train.batch_size, shuffle=False))
    _save(run_dir, cfg, "done", 0, model_state, None, info, norm, history, data.name)
    return run_dir / "checkpoint.pt"


def _save(run_dir, cfg, stage, epoch, model_state, opt_state, info, norm, history, dataset) -> None:
    save_checkpoint(
        run_dir,
        {
            "stage": stage,
            "epoch": epoch,
            "method": cfg.method,
            "model": model_state,
            "opt": opt_state,
            "config": to_dict(cfg),
            "backbone": info.to_dict(),
            "norm": norm,
            "history": history,
            "rng": torch.get_rng_state(),
            "dataset": dataset,
        },
    )
    write_json(run_dir / "history.json", history)


def _fit_autoencoder(cfg: UtadConfig, run_dir: Path, data: DataBundle, state, info, progress: bool):
    from utad.methods.autoencoder import AEDetector, ae_loss, build_autoencoder
    from utad.train import _fabric, _fit_stage, _loader

    a = cfg.ae
    net = build_autoencoder(cfg.data.image_size, cfg.data.channels, a)
    opt = torch.optim.Adam(net.parameters(), lr=a.lr, weight_decay=a.weight_decay)
    history: dict[str, list] = {"ae": []}
    epoch = 0
    if state is not None and state.get("stage") == "ae":
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        history, epoch = state["history"], state["epoch"]
        torch.set_rng_state(state["rng"])
    fabric = _fabric(cfg)

    def step(model, batch):
        x = batch["image"]
        if cfg.train.augment_flip and torch.rand(()) < 0.5:
            x = x.flip(-1)
        loss = ae_loss(cfg.method, x, model(x), a)
        return loss, {"total": float(loss.detach())}

    def make_loader(ep: int) -> DataLoader:
        n = len(data.train)
        return _loader(data.train, a.batch_size, True, cfg.seed + ep, cfg.data.num_workers, n > a.batch_size)

    def snapshot(ep: int) -> None:
        if fabric.is_global_zero:
            _save(run_dir, cfg, "ae", ep, net.state_dict(), opt.state_dict(), info, None, history, data.name)

    _fit_stage(
        fabric,
        f"autoencoder ({cfg.method})",
        net,
        opt,
        make_loader,
        step,
        a.epochs,
        epoch,
        history["ae"],
        snapshot,
        cfg.train.max_minutes,
        progress,
        a.lr,
    )
    net.eval()
    det = AEDetector(net, cfg.method, a, cfg.detect, image_size=cfg.data.image_size).to(fabric.device)
    return det, net.state_dict(), history


def _fit_features(cfg: UtadConfig, features, data: DataBundle, progress: bool):
    from utad.methods.features import collect_features

    f = cfg.feature
    start = time.perf_counter()
    loader = DataLoader(data.train, batch_size=cfg.train.batch_size, shuffle=False)
    feats = collect_features(features, loader, progress)
    n_img, dims, h, w = feats.shape
    row: dict[str, Any] = {"images": n_img, "dims": dims, "grid": [h, w]}
    row["feature_seconds"] = time.perf_counter() - start
    if cfg.method == "feature-knn":
        from utad.methods.knn import KNNDetector, greedy_coreset

        points = feats.permute(0, 2, 3, 1).reshape(-1, dims)
        n = max(1, math.ceil(f.coreset_ratio * len(points)))
        if f.coreset_max:
            n = min(n, f.coreset_max)
        if f.coreset == "greedy" and n < len(points):
            t0 = time.perf_counter()
            idx = greedy_coreset(points, n, f.coreset_projection, cfg.seed)
            row["coreset_seconds"] = time.perf_counter() - t0
        elif f.coreset == "random" and n < len(points):
            idx = torch.randperm(len(points), generator=torch.Generator().manual_seed(cfg.seed))[:n]
        else:
            idx = torch.arange(len(points))
        bank = points[idx].contiguous()
        row.update({"patches": len(points), "bank": len(bank), "coreset": f.coreset})
        det = KNNDetector(features, bank, f.k, cfg.detect, None, cfg.data.image_size, f.smooth_map)
        model_state = {"bank": bank}
    else:
        from utad.methods.gaussian import GaussianDetector, fit_gaussians

        g = torch.Generator().manual_seed(cfg.seed)
        channels = torch.randperm(dims, generator=g)[: min(f.channels, dims)].sort().values
        mean, cov_inv = fit_gaussians(feats.index_select(1, channels), f.eps)
        row.update({"channels": len(channels), "positions": h * w})
        det = GaussianDetector(
            features, channels, mean, cov_inv, cfg.detect, None, cfg.data.image_size, f.smooth_map
        )
        model_state = {"channels": channels, "mean": mean, "cov_inv": cov_inv}
    row["seconds"] = time.perf_counter() - start
    log.info("%s fitted in %.1f s: %s", cfg.method, row["seconds"], row)
    return det, model_state, {"fit": [row]}
