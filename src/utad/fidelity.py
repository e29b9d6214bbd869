"""Fidelity of the second stage: how much of the impression's gap to x the expert's x^ closes (Sec. 3.2).

The paper's argument (Fig. 6-7) is that m is anomaly-free but blurry and x^ restores the normal details, so on
anomaly-free images x^ must be much closer to x than m is. Measured on normal images only, with the run's own
measurement (the PM backbone and layers, or pixels when ``pm.distance=pixel``):

* ``phi_x_xhat``, ``phi_x_m``: the mean over pixels and images of the distance maps phi(x, x^) and phi(x, m)
  (Eq. 8's terms, lambda-weighted sum over layers);
* ``gain = phi_x_m / phi_x_xhat``: the *fidelity gain*, > 1 when x^ is closer to x than m is (2 means x^ is half
  as far from x as m is), < 1 when the expert makes things worse;
* ``ssim_x_xhat``, ``ssim_x_m``: mean SSIM (Wang et al. 2004; 7x7 window, data range 1) over images, so blur is
  visible in a second, backbone-free number.

Whether x^ uses x at all: ``detail_swap`` is the mean |x^ - x^'| over pixels, where x^' is decoded from the
same impression with the detail code s of another image of the batch (``swapped_reconstruction``), and
``l1_xhat_m`` the mean |x^ - m|. If x^ restores *this* image's details, swapping s changes x^ by a good part of
how far x^ moves from m; a ``detail_swap`` near 0 says Expert-Net ignores s and x^ is one fixed sharpening of
m, the same for every input with that impression (measured on the demo with the paper's detail term: |x^ - x^'|
1e-5 against |x^ - m| 0.012, in pixel values).

The other side of the argument is that x^ stays anomaly-free: x reaches D_X^A only through the detail code s, so
x^ should not restore a defect. ``FidelityMeter(pm, masked=True)`` measures that on the anomalous test images
with masks: the same distances averaged over the ground-truth defect pixels only (pooled over all of them), and
their ratio ``gain`` there, the *defect gain*. Near 1, x^ keeps the defect out as m does; the closer it comes
to the normal images' gain (or above it), the more of the defect x^ copies from x (a *leak*, e.g. through a
spatial detail code, ``expert.detail_stride``), which dims e where it should be bright.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from skimage.metrics import structural_similarity

from utad.nets.perceptual import PerceptualMeasurement

LOW_GAIN = 0.8  # below this, x^ is clearly further from x than the impression m: the second stage failed


def low_fidelity_warning(gain: float | None, where: str) -> str | None:
    """A warning when the expert's x^ is clearly further from x than the impression m is (gain below
    ``LOW_GAIN``): the second stage then adds noise, not details (seen as a flat or black x^ when Expert-Net
    diverged on a short schedule). ``where``: which images the gain was measured on. None when fine or unknown."""
    if gain is None or not np.isfinite(gain) or gain >= LOW_GAIN:
        return None
    return (
        f"Expert-Net's x^ is further from x than the impression m is (fidelity gain {gain:.2f} on {where}): the "
        "second stage did not train well; look at x^ in report.png and at the detail term s per epoch in "
        "history.json, and try expert.lambda_s_prior=0.1 (bounds the detail code when that term blows up), "
        "expert.residual=true or a lower train.expert_lr (docs/oneclass.md, 'One-class runs')"
    )


DETAIL_DRIFT = 1.0  # detail term |E_S(x^) - s| above this in any epoch: the detail code's scale ran away
# (measured peaks: 0.002 to 0.05 on MVTec, at most 0.36 in sound one-class cells; 19 to 1 776 where it blew up)


def detail_drift_warning(rows: list[dict[str, float]]) -> str | None:
    """A warning when the detail term ``s`` of stage 2 (one history row per epoch) rose above ``DETAIL_DRIFT``:
    nothing in the paper's losses fixes the scale of E_S's codes, and when it drifts AdaIN's parameters grow
    until x^ saturates (docs/oneclass.md, 'One-class runs'). None when the term stayed small or was not recorded."""
    values = [(r["epoch"], r["s"]) for r in rows if np.isfinite(r.get("s", np.nan))]
    if not values:
        return None
    epoch, peak = max(values, key=lambda v: v[1])
    if peak <= DETAIL_DRIFT:
        return None
    return (
        f"the detail term |E_S(x^) - s| reached {peak:.3g} in stage-2 epoch {epoch} (above {DETAIL_DRIFT:g}): the "
        "detail code's scale ran away, which can leave x^ flat or black; look at x^ in report.png and train stage "
        "2 again with expert.lambda_s_prior=0.1 (utad branch RUN --out NEW --set ... keeps stage 1)"
    )


# still_rising_hint: the mean validation gain of the last 5 stage-2 epochs above the 5 before by 0.02
RISING_WINDOW = 5
RISING_BY = 0.02


def still_rising_hint(rows: list[dict[str, float]], run: str, schedule: str = "constant") -> str | None:
    """A hint when stage 2's validation fidelity gain was still rising at its end: the mean of the last
    ``RISING_WINDOW`` epochs' ``val_gain`` above the mean of the window before by more than ``RISING_BY`` (a mean,
    since one epoch's gain is noisy). It names the command that continues the expert (constant schedule) or
    trains it again with more epochs (any other). None when flat, falling, too short or not recorded."""
    gains = [r["val_gain"] for r in rows if np.isfinite(r.get("val_gain", np.nan))]
    w = RISING_WINDOW
    if len(gains) < 2 * w:
        return None
    before, last = float(np.mean(gains[-2 * w : -w])), float(np.mean(gains[-w:]))
    if last - before <= RISING_BY:
        return None
    n = 2 * len(rows)
    command = (
        f"utad branch {run} --out {run}-e{n} --keep-expert --set train.expert_epochs={n}"
        if schedule == "constant"
        else f"utad branch {run} --out {run}-e{n} --set train.expert_epochs={n}"
    )
    return (
        f"stage 2's validation fidelity gain was still rising at its end (mean of the last {w} epochs {last:.3f}, "
        f"of the {w} before {before:.3f}): more epochs may bring x^ closer to x; {command}, then utad choose over "
        "both runs decides on drawn defects (README, Table 1)"
    )


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of two (H, W, C) images in [0, 1] (channel mean; 7x7 uniform window as scikit-image)."""
    return float(structural_similarity(a, b, channel_axis=-1, data_range=1.0))


@dataclass
class FidelityMeter:
    """Accumulates phi(x, x^), phi(x, m) and SSIMs over batches of normal images; ``result()`` summarises."""

    pm: PerceptualMeasurement
    with_ssim: bool = True
    masked: bool = False  # True: means over the pixels of the masks given to ``update`` (no SSIM)
    _sums: dict[str, float] = field(default_factory=lambda: {"x_xhat": 0.0, "x_m": 0.0})
    _ssim: dict[str, list[float]] = field(default_factory=lambda: {"x_xhat": [], "x_m": []})
    _n: int = 0
    _pixels: float = 0.0
    _has_xhat: bool = False
    _l1: dict[str, float] = field(default_factory=lambda: {"xhat_m": 0.0, "swap": 0.0})
    _n_swap: int = 0

    @torch.no_grad()
    def update(
        self,
        x: torch.Tensor,
        m: torch.Tensor,
        x_hat: torch.Tensor | None,
        mask: torch.Tensor | None = None,
        x_hat_swapped: torch.Tensor | None = None,
    ) -> None:
        """x, m, x^ (B, C, H, W) in [0, 1]; x^ None when the model has no Expert-Net; ``mask`` (B, 1, H, W),
        required when ``masked``: the pixels to average over; ``x_hat_swapped``: x^ decoded with other images'
        detail codes (``swapped_reconstruction``), for ``detail_swap``."""
        if self.masked and mask is None:
            raise ValueError("a masked FidelityMeter needs the defect masks")
        if x_hat is not None and x_hat_swapped is not None:
            self._l1["xhat_m"] += float((x_hat - m).abs().mean(dim=(1, 2, 3)).sum())
            self._l1["swap"] += float((x_hat - x_hat_swapped).abs().mean(dim=(1, 2, 3)).sum())
            self._n_swap += x.shape[0]
        pairs = {"x_m": (x, m)}
        if x_hat is not None:
            pairs["x_xhat"] = (x, x_hat)
            self._has_xhat = True
        maps = self.pm.distances(pairs)
        for k, d in maps.items():
            if self.masked:
                self._sums[k] += float((d * mask).sum())
            else:
                self._sums[k] += float(d.mean(dim=(1, 2, 3)).sum())
        if self.masked:
            self._pixels += float(mask.sum())
        elif self.with_ssim:
            for k, (_, b) in pairs.items():
                xs, bs = x.permute(0, 2, 3, 1).cpu().numpy(), b.permute(0, 2, 3, 1).cpu().numpy()
                self._ssim[k] += [ssim(p, q) for p, q in zip(xs, bs, strict=True)]
        self._n += x.shape[0]

    def result(self) -> dict[str, float | int | None]:
        n = max(self._pixels if self.masked else self._n, 1)
        phi_xh = self._sums["x_xhat"] / n if self._has_xhat else None
        phi_m = self._sums["x_m"] / n
        out: dict[str, float | int | None] = {
            "n_images": self._n,
            "phi_x_xhat": phi_xh,
            "phi_x_m": phi_m,
            "gain": (phi_m / phi_xh) if phi_xh else None,
        }
        if self._n_swap:
            out["l1_xhat_m"] = self._l1["xhat_m"] / self._n_swap
            out["detail_swap"] = self._l1["swap"] / self._n_swap
        if self.masked:
            out["n_pixels"] = int(self._pixels)
        elif self.with_ssim:
            out["ssim_x_xhat"] = float(np.mean(self._ssim["x_xhat"])) if self._ssim["x_xhat"] else None
            out["ssim_x_m"] = float(np.mean(self._ssim["x_m"])) if self._ssim["x_m"] else None
        return out


@torch.no_grad()
def swapped_reconstruction(
    expert, x: torch.Tensor, m: torch.Tensor, s: torch.Tensor | None = None
) -> torch.Tensor | None:
    """x^ of each image decoded from its own impression with the detail code of the next image of the batch
    (the last takes the first's); None without E_S (s is then no function of x) or for a batch of one.
    ``s``: the batch's detail codes E_S(x) when already computed (else computed here)."""
    if expert is None or getattr(expert, "detail", None) is None or x.shape[0] < 2:
        return None
    return expert.reconstruct(m, (expert.detail_vector(x) if s is None else s).roll(1, dims=0))


@torch.no_grad()
def measure_fidelity(
    ienet, expert, pm: PerceptualMeasurement, loader, device, with_ssim: bool = True
) -> dict:
    """Fidelity of (IE-Net, Expert-Net) on the normal images of ``loader`` (batches with ``"image"``)."""
    meter = FidelityMeter(pm, with_ssim=with_ssim)
    was = (ienet.training, expert.training if expert is not None else False)
    ienet.eval()
    if expert is not None:
        expert.eval()
    for batch in loader:
        x = batch["image"].to(device)
        m = ienet.impression(x)
        out = expert(x, m) if expert is not None else None
        x_hat = out.x_hat if out is not None else None
        swapped = swapped_reconstruction(expert, x, m, out.s if out is not None else None)
        meter.update(x, m, x_hat, x_hat_swapped=swapped)
    ienet.train(was[0])
    if expert is not None:
        expert.train(was[1])
    return meter.result()
