"""Two-stage training (Sec. 3, 4.2): stage 1 IE-Net, stage 2 Expert-Net on (x, m) from the frozen IE-Net.

Lightning Fabric runs the same loop on CPU, one GPU or several devices. After every epoch the run's
``checkpoint.pt`` is rewritten atomically (weights, optimiser states, config, history); ``resume=True``
continues from the saved stage and epoch. After stage 2 the detector is calibrated on the held-out normal
images and the normalisation statistics go into the checkpoint. ``seed`` makes CPU runs repeatable.
"""

from __future__ import annotations

import logging
import math
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset
from tqdm.auto import tqdm

from utad import runlog
from utad.checkpoint import load_checkpoint, save_checkpoint
from utad.config import UtadConfig, dump_yaml, from_dict, to_dict
from utad.data.bundle import DataBundle, build_data
from utad.data.train_defects import draw_train_defects
from utad.detector import Detector
from utad.errors import UtadError
from utad.fidelity import detail_drift_warning, low_fidelity_warning, measure_fidelity, still_rising_hint
from utad.io import lock_run, prepare_run_dir, unlock_run, write_json, write_text
from utad.losses import expert_loss, ie_loss
from utad.model import build_expert, build_ienet, build_pm
from utad.nets.discriminator import MsImageDis, lsgan_d_loss

log = logging.getLogger("utad")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 (seeds code that uses the legacy global RNG)
    torch.manual_seed(seed)


def _fabric(cfg: UtadConfig):
    """Fabric for ``train.accelerator/devices/num_nodes/strategy/precision``, launched.

    With several devices on one machine Fabric's launcher starts the other processes by running the same
    command again (each with its rank in the environment); under torchrun or SLURM the processes exist already
    and Fabric only joins them. Either way every process runs ``_train``: rank 0 alone touches the run folder.
    """
    from lightning_fabric import Fabric

    t = cfg.train
    fabric = Fabric(
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=t.strategy,
        precision=t.precision,
    )
    fabric.launch()
    return fabric


def _shard(loader: DataLoader, fabric, seed: int, epoch: int) -> DataLoader:
    """With several processes: each takes its own share of the epoch's images (a DistributedSampler seeded by
    ``seed`` and the epoch, so the order changes every epoch and every rank agrees on it)."""
    if fabric.world_size == 1:
        return loader
    from torch.utils.data import DistributedSampler, RandomSampler

    sampler = DistributedSampler(
        loader.dataset,
        num_replicas=fabric.world_size,
        rank=fabric.global_rank,
        shuffle=isinstance(loader.sampler, RandomSampler),
        seed=seed,
    )
    sampler.set_epoch(epoch)
    drop_last = loader.drop_last and len(sampler) > loader.batch_size
    return DataLoader(
        loader.dataset,
        batch_size=loader.batch_size,
        sampler=sampler,
        num_workers=loader.num_workers,
        drop_last=drop_last,
    )


def _gather(fabric, values: list[float]) -> torch.Tensor:
    """(world_size, len(values)) float64: every process's values, on every process."""
    import torch.distributed as dist

    mine = torch.tensor(values, dtype=torch.float64)
    out = [torch.empty_like(mine) for _ in range(fabric.world_size)]
    dist.all_gather(out, mine)
    return torch.stack(out)


def check_replicas(fabric, model: torch.nn.Module, desc: str) -> None:
    """Every process must end a stage with the same weights (DDP averages the gradients); a fingerprint of the
    parameters is gathered from all ranks and compared, so a silent divergence fails loudly."""
    if fabric.world_size == 1:
        return
    with torch.no_grad():
        flat = torch.cat([p.detach().double().flatten().cpu() for p in model.parameters()])
        ramp = torch.linspace(1.0, 2.0, flat.numel(), dtype=torch.float64)
        fingerprint = [float(flat.sum()), float((flat * ramp).sum()), float(flat.abs().sum())]
    every = _gather(fabric, fingerprint)
    if not torch.equal(every, every[:1].expand_as(every)):
        raise UtadError(
            f"{desc}: the {fabric.world_size} processes ended with different weights: {every.tolist()}"
        )
    log.info("%s: weights identical on all %d processes", desc, fabric.world_size)


def is_rank_zero() -> bool:
    """False in the extra processes of a distributed run (they print and write nothing)."""
    from lightning_fabric.utilities.rank_zero import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0


def _loader(
    ds, batch_size: int, shuffle: bool, seed: int, workers: int, drop_last: bool = False
) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    return DataLoader(
        ds, batch_size=batch_size, shuffle=shuffle, generator=g, num_workers=workers, drop_last=drop_last
    )


def _ie_optimizer(cfg: UtadConfig, params) -> torch.optim.Optimizer:
    t = cfg.train
    if t.ie_optimizer == "sgd":
        return torch.optim.SGD(params, lr=t.ie_lr, momentum=t.ie_momentum)
    if t.ie_optimizer == "adam":
        return torch.optim.Adam(params, lr=t.ie_lr)
    raise UtadError(f"train.ie_optimizer must be sgd or adam, got {t.ie_optimizer!r}")


def _epoch_bar(total: int, done: int, desc: str, enabled: bool):
    return tqdm(total=total, initial=done, desc=desc, unit="epoch", disable=not enabled, dynamic_ncols=True)


def _mean(rows: list[dict[str, float]]) -> dict[str, float]:
    return {k: float(np.mean([r[k] for r in rows if k in r])) for k in rows[0]} if rows else {}


def train(
    cfg: UtadConfig | None,
    run_dir: str | Path,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    data: DataBundle | None = None,
) -> Path:
    """Train both stages into ``run_dir``; returns the checkpoint path. Refuses to clobber an existing run.

    With ``resume=True`` the config comes from the run's checkpoint (``cfg`` may be None). What ran is appended to
    the run's ``log.txt`` (``utad.runlog``).
    """
    depth = len(runlog._active)
    ok = False
    try:
        path = _train(cfg, run_dir, resume, overwrite, progress, data)
        ok = True
        return path
    finally:
        while len(runlog._active) > depth:
            runlog.detach(ok)
        unlock_run(run_dir)


def _train(
    cfg: UtadConfig | None,
    run_dir: str | Path,
    resume: bool,
    overwrite: bool,
    progress: bool,
    data: DataBundle | None,
) -> Path:
    run_dir = Path(run_dir)
    state: dict[str, Any] | None = None
    if resume:
        state = load_checkpoint(run_dir)
        cfg = from_dict(state["config"])
        if state["stage"] == "done":
            log.info("%s: training already finished", run_dir)
            return run_dir / "checkpoint.pt"
    if cfg is None:
        raise UtadError("train() needs a config unless resume=True")
    if cfg.method != "utad":
        from utad.methods.train import train_baseline

        return train_baseline(cfg, run_dir, state, overwrite, progress, data)
    seed_everything(cfg.seed)
    pm, backbone = build_pm(cfg)  # first: a missing weight file fails before a run folder or data is touched
    if not resume:
        prepare_run_dir(run_dir, overwrite=overwrite, create=False)  # refuse to clobber before launching
    fabric = _fabric(cfg)
    data = _open_run_all_ranks(fabric, cfg, run_dir, resume, overwrite, data)
    log.info("PM backbone %s (%s), layers %s", backbone.name, backbone.weights, backbone.layers)
    if not backbone.pretrained and backbone.name != "none":
        log.warning(
            "PM backbone %s has RANDOM weights: results are not the paper's measurement", backbone.name
        )

    ienet, expert = build_ienet(cfg), build_expert(cfg)
    ie_opt = _ie_optimizer(cfg, ienet.parameters())
    ex_opt = (
        torch.optim.Adam(expert.parameters(), lr=cfg.train.expert_lr, betas=tuple(cfg.train.expert_betas))
        if expert is not None
        else None
    )
    disc, d_opt = _discriminator(cfg) if expert is not None else (None, None)
    history: dict[str, list] = {"ienet": [], "expert": []}
    stage, epoch = "ienet", 0
    if state is not None:
        ienet.load_state_dict(state["ienet"])
        ie_opt.load_state_dict(state["ienet_opt"])
        if expert is not None and state.get("expert") is not None:
            expert.load_state_dict(state["expert"])
            ex_opt.load_state_dict(state["expert_opt"])
        if disc is not None and state.get("disc") is not None:
            disc.load_state_dict(state["disc"])
            d_opt.load_state_dict(state["disc_opt"])
        history, stage, epoch = state["history"], state["stage"], state["epoch"]
        torch.set_rng_state(state["rng"])

    def snapshot(stage_: str, epoch_: int, norm: dict | None = None) -> None:
        if not fabric.is_global_zero:
            return
        save_checkpoint(
            run_dir,
            {
                "stage": stage_,
                "epoch": epoch_,
                "ienet": ienet.state_dict(),
                "ienet_opt": ie_opt.state_dict(),
                "expert": expert.state_dict() if expert is not None else None,
                "expert_opt": ex_opt.state_dict() if ex_opt is not None else None,
                **({"disc": disc.state_dict(), "disc_opt": d_opt.state_dict()} if disc is not None else {}),
                "config": to_dict(cfg),
                "backbone": backbone.to_dict(),
                "norm": norm,
                "history": history,
                "rng": torch.get_rng_state(),
                "dataset": data.name,
            },
        )
        write_json(run_dir / "history.json", history)

    t = cfg.train
    bs = t.batch_size
    pm.to(fabric.device)
    val_loader = _loader(data.val, bs, False, cfg.seed, cfg.data.num_workers)
    # ---- stage 1: IE-Net --------------------------------------------------------------------------------
    if stage == "ienet":
        if t.channels_last:  # ~2x faster for the inception network on CPU (benchmarks/profile_step.py)
            ienet.to(memory_format=torch.channels_last)

        def ie_step(model, batch):
            x = _prep(batch["image"], t)
            ie = cfg.ienet
            x_in = draw_train_defects(x, ie.train_defects)[0] if ie.train_defects else None
            return ie_loss(model, x, ie.lambda_kl, ie.lambda_rec, ie.use_info, ie.lambda_ssim, x_in)[:2]

        def ie_loader(ep: int) -> DataLoader:
            return _loader(data.train, bs, True, cfg.seed + ep, cfg.data.num_workers, len(data.train) > bs)

        def ie_validate() -> dict[str, float]:
            f = measure_fidelity(ienet, None, pm, val_loader, fabric.device, with_ssim=False)
            return {"val_phi_x_m": f["phi_x_m"]}

        epoch = _fit_stage(
            fabric,
            "stage 1 IE-Net",
            ienet,
            ie_opt,
            ie_loader,
            ie_step,
            t.ie_epochs,
            epoch,
            history["ienet"],
            lambda ep: snapshot("ienet", ep),
            t.max_minutes,
            progress,
            t.ie_lr,
            t.lr_schedule,
            ie_validate if t.val_fidelity else None,
            seed=cfg.seed,
            forward_methods=("critic",),
        )
        stage, epoch = ("expert" if expert is not None else "calibrate"), 0
        snapshot(stage, 0)

    # ---- stage 2: Expert-Net on (x, m) from the frozen IE-Net -------------------------------------------
    # m in the default memory format, as the detector computes it at inference (channels-last convolutions
    # round differently), whether stage 1 ran in this process or the run was resumed in stage 2
    ienet.to(memory_format=torch.contiguous_format)
    ienet.eval()
    device = fabric.device
    ienet.to(device)
    if stage == "expert":
        pairs = TensorDataset(*_impressions(ienet, data.train, bs, device))  # m computed once, not per epoch
        if disc is not None:
            disc.to(device).train()  # once per stage, not per step
        e = cfg.expert

        def expert_step(model, batch):
            x, m = batch
            if t.augment_flip and torch.rand(()) < 0.5:
                x, m = x.flip(-1), m.flip(-1)
            if t.expert_crop:
                x, m = random_crop(x, m, size=t.expert_crop)
            out, d_loss = None, None
            if disc is not None:
                out = model(x, m)
                # the discriminator follows Expert-Net's schedule, scaled to its own base rate
                d_lr = ex_opt.param_groups[0]["lr"] * (e.disc_lr or t.expert_lr) / t.expert_lr
                d_loss = _discriminator_step(disc, d_opt, x, out.x_hat.detach(), d_lr)
                disc.requires_grad_(False)  # the generator's adversarial term updates Expert-Net only
            loss, parts, _ = expert_loss(
                model,
                x,
                m,
                e.lambda_x,
                e.lambda_m,
                e.lambda_s,
                pm,
                e.lambda_perceptual,
                disc,
                e.lambda_adv,
                out,
                detail_judge=e.detail_judge,
                lambda_s_prior=e.lambda_s_prior,
                lambda_s_random=e.lambda_s_random,
                lambda_ssim=e.lambda_ssim,
            )
            if disc is None:
                return loss, parts
            disc.requires_grad_(True)
            return loss, {**parts, "d": d_loss}

        def expert_validate() -> dict[str, float]:
            f = measure_fidelity(ienet, expert, pm, val_loader, fabric.device, with_ssim=False)
            row = {"val_phi_x_m": f["phi_x_m"], "val_phi_x_xhat": f["phi_x_xhat"], "val_gain": f["gain"]}
            if "detail_swap" in f:
                row["val_detail_swap"] = f["detail_swap"]
            return row

        def expert_loader(ep: int) -> DataLoader:
            return _loader(pairs, bs, True, cfg.seed + 1000 + ep, 0, len(pairs) > bs)

        epoch = _fit_stage(
            fabric,
            "stage 2 Expert-Net",
            expert,
            ex_opt,
            expert_loader,
            expert_step,
            t.expert_epochs,
            epoch,
            history["expert"],
            lambda ep: snapshot("expert", ep),
            t.max_minutes,
            progress,
            t.expert_lr,
            t.lr_schedule,
            expert_validate if t.val_fidelity else None,
            seed=cfg.seed + 1000,
            forward_methods=("detail_vector",),
        )
        stage = "calibrate"
        last = history["expert"][-1] if history["expert"] else {}
        for warning in (
            low_fidelity_warning(last.get("val_gain"), "the validation images, last epoch"),
            detail_drift_warning(history["expert"]),
        ):
            if warning and fabric.is_global_zero:
                log.warning(warning)
        hint = still_rising_hint(history["expert"], str(run_dir), t.lr_schedule)
        if hint and fabric.is_global_zero:
            log.info(hint)

    # ---- calibration on held-out normal images ----------------------------------------------------------
    if expert is not None:
        expert.to(device).eval()
    det = Detector(ienet, expert, pm, cfg.detect, image_size=cfg.data.image_size).to(device).eval()
    norm = det.calibrate(val_loader)
    snapshot("done", epoch, norm)
    return run_dir / "checkpoint.pt"


def _discriminator(cfg: UtadConfig) -> tuple[MsImageDis | None, torch.optim.Optimizer | None]:
    """MUNIT's multi-scale discriminator and its Adam (``expert.disc_lr``, else Expert-Net's; Expert-Net's betas) when
    ``expert.lambda_adv > 0``, else (None, None). Beyond the paper; one process only (``config.validate``)."""
    e = cfg.expert
    if e.lambda_adv <= 0:
        return None, None
    disc = MsImageDis(cfg.data.channels, e.disc_dim, e.disc_layers, e.disc_scales)
    opt = torch.optim.Adam(
        disc.parameters(), lr=e.disc_lr or cfg.train.expert_lr, betas=tuple(cfg.train.expert_betas)
    )
    return disc, opt


def _discriminator_step(disc, opt, real: torch.Tensor, fake: torch.Tensor, lr: float) -> float:
    """One LSGAN update of the discriminator on x (real) and detached x^ (fake) at learning rate ``lr`` (the
    trainer scales Expert-Net's current one, so a schedule applies to both); returns the loss before the update."""
    for group in opt.param_groups:
        group["lr"] = lr
    loss = lsgan_d_loss(disc, real, fake)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return float(loss.detach())


def _open_run_all_ranks(fabric, cfg, run_dir, resume, overwrite, data) -> DataBundle:
    """Rank 0 opens the run (folder, config, log, data cache); the others wait for it, then build the same
    data without writing anything. An error on rank 0 reaches every rank (no process is left waiting)."""
    if fabric.world_size == 1:
        return open_run(cfg, run_dir, resume, overwrite, data, cfg.train.batch_size)
    error = None
    if fabric.is_global_zero:
        try:
            data = open_run(cfg, run_dir, resume, overwrite, data, cfg.train.batch_size)
        except UtadError as exc:
            error = str(exc)
    error = fabric.broadcast(error, src=0)
    if error is not None:
        raise UtadError(error)
    if not fabric.is_global_zero:
        log.setLevel(logging.WARNING)  # rank 0 reports; the others only warn
        data = data or build_data(cfg.data, cfg.seed, run_dir.parent / ".utad-cache")
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
    log.info(
        "distributed: %d processes (%s), about %d of the %d training images per epoch on each",
        fabric.world_size,
        type(fabric.strategy).__name__,
        math.ceil(len(data.train) / fabric.world_size),
        len(data.train),
    )
    return data


def open_run(
    cfg: UtadConfig,
    run_dir: Path,
    resume: bool,
    overwrite: bool,
    data: DataBundle | None,
    batch_size: int,
    batch_key: str = "train.batch_size",
) -> DataBundle:
    """Check the run folder (refusing to clobber before anything is read), build the data, then create the
    folder with ``config.yaml`` (and ``skipped.json`` when files were left out). Shared by every method."""
    if not resume:
        prepare_run_dir(
            run_dir, overwrite=overwrite, resume=False, create=False
        )  # refuse early, make nothing
    data = data or build_data(cfg.data, cfg.seed, run_dir.parent / ".utad-cache")
    if batch_size > len(data.train):
        raise UtadError(
            f"{batch_key} {batch_size} is larger than the training set ({len(data.train)} images after the "
            "validation split); lower it"
        )
    prepare_run_dir(run_dir, overwrite=overwrite, resume=resume)
    lock_run(run_dir)  # released when train() returns or fails
    runlog.attach(
        run_dir,
        "train (resume)" if resume else "train",
        f"method {cfg.method}, data {data.name} ({len(data.train)} train / {len(data.val)} val / {len(data.test)} "
        f"test images, {cfg.data.image_size} px), seed {cfg.seed}",
    )
    write_text(run_dir / "config.yaml", dump_yaml(cfg))
    if data.skipped:
        write_json(run_dir / "skipped.json", data.skipped)
        log.warning(
            "skipped %d unreadable file(s), listed in %s", len(data.skipped), run_dir / "skipped.json"
        )
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    return data


def lr_at(base_lr: float, schedule: str, epoch: int, epochs: int) -> float:
    """Learning rate of an epoch (0-based): ``constant`` (the paper) or ``cosine`` decay from base_lr to 0.

    A pure function of the epoch, so a resumed run needs no scheduler state to continue exactly.
    """
    if schedule == "constant":
        return base_lr
    if schedule == "cosine":
        return base_lr * 0.5 * (1.0 + math.cos(math.pi * epoch / max(epochs, 1)))
    raise UtadError(f"train.lr_schedule must be constant or cosine, got {schedule!r}")


def random_crop(*images: torch.Tensor, size: int) -> tuple[torch.Tensor, ...]:
    """The same random ``size`` x ``size`` window of each (B, C, H, W) tensor, drawn per sample (torch's RNG)."""
    b, _, h, w = images[0].shape
    if size >= min(h, w):
        return images
    top = torch.randint(0, h - size + 1, (b,))
    left = torch.randint(0, w - size + 1, (b,))
    out = []
    for im in images:
        out.append(
            torch.stack([im[i, :, t : t + size, l : l + size] for i, (t, l) in enumerate(zip(top, left))])
        )
    return tuple(out)


def _fit_stage(
    fabric,
    desc,
    model,
    opt,
    make_loader,
    step,
    epochs,
    epoch,
    history,
    snapshot,
    max_minutes,
    progress,
    base_lr,
    schedule="constant",
    validate=None,
    seed: int = 0,
    forward_methods: tuple[str, ...] = (),
) -> int:
    """Train one stage from ``epoch`` to ``epochs``; returns the epoch reached.

    Each epoch's data order comes from its own seed, and the checkpoint holds torch's RNG state, so a resumed
    run continues exactly as an uninterrupted one would. ``step(model, batch) -> (loss, parts)``;
    ``validate() -> dict`` (optional) adds validation numbers (the fidelity) to each epoch's history row.
    With several processes each epoch's loader is sharded (``_shard``, seeded by ``seed`` and the epoch), the
    row's losses are averaged over the processes, ``images`` counts this process's share, and the stage ends
    with a check that every process holds the same weights.
    """
    model, opt = fabric.setup(model, opt)
    for (
        name
    ) in forward_methods:  # methods the loss calls besides forward (IE-Net's critic T, Expert-Net's E_S)
        model.mark_forward_method(name)
    offset = history[-1]["seconds"] if history else 0.0
    start, val_seconds = time.perf_counter(), 0.0
    bar = _epoch_bar(epochs, epoch, desc, progress and fabric.is_global_zero)
    while epoch < epochs:
        for group in opt.param_groups:
            group["lr"] = lr_at(base_lr, schedule, epoch, epochs)
        model.train()
        rows, images = [], 0
        loader = _shard(make_loader(epoch), fabric, seed, epoch)
        for batch in fabric.setup_dataloaders(loader, use_distributed_sampler=False):
            images += len(batch["image"] if isinstance(batch, dict) else batch[0])
            loss, parts = step(model, batch)
            if not torch.isfinite(loss):
                bad = [k for k, v in parts.items() if k != "total" and not math.isfinite(v)] or ["total"]
                bar.close()
                raise UtadError(
                    f"{desc}: the loss became {float(loss.detach())} in epoch {epoch + 1} (term {', '.join(bad)}); "
                    f"training stopped, the checkpoint of epoch {epoch} is kept. Lower the learning rate or "
                    "check the data, then train again (or --resume)"
                )
            opt.zero_grad(set_to_none=True)
            fabric.backward(loss)
            opt.step()
            rows.append(parts)
        epoch += 1
        means = _mean(rows)
        if fabric.world_size > 1:  # the epoch's losses over all processes, not rank 0's share
            every = _gather(fabric, [*means.values(), images])
            means = dict(zip(means, every[:, :-1].mean(0).tolist()))
            means["images_per_process"] = [int(n) for n in every[:, -1].tolist()]
        means["images"] = images if fabric.world_size == 1 else sum(means["images_per_process"])
        seconds = offset + time.perf_counter() - start - val_seconds  # training time, validation excluded
        t0 = time.perf_counter()
        extra = validate() if validate is not None else {}
        val_seconds += time.perf_counter() - t0
        history.append({"epoch": epoch, **means, **extra, "seconds": seconds})
        bar.update(1)
        bar.set_postfix({k: f"{v:.4f}" for k, v in means.items() if not k.startswith("images")})
        snapshot(epoch)
        if max_minutes and time.perf_counter() - start > 60 * max_minutes:
            log.warning("%s stopped after %d epochs (train.max_minutes=%s)", desc, epoch, max_minutes)
            break
    bar.close()
    check_replicas(fabric, model, desc)
    return epoch


def _prep(x: torch.Tensor, t) -> torch.Tensor:
    if t.augment_flip and torch.rand(()) < 0.5:
        x = x.flip(-1)
    return x.contiguous(memory_format=torch.channels_last) if t.channels_last else x


@torch.no_grad()
def _impressions(ienet, dataset, batch_size: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """All training images and their impressions m = D_M(E_M(x)) (IE-Net frozen, eval mode), on the CPU."""
    xs, ms = [], []
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        x = batch["image"]
        xs.append(x)
        ms.append(ienet.impression(x.to(device)).cpu())
    return torch.cat(xs), torch.cat(ms)
