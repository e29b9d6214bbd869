"""Defects drawn on IE-Net's training inputs, to teach the impression to leave defects out (beyond the paper).

Not part of the paper, off in every preset (``ienet.train_defects`` = 0). Sec. 3.1 asks for an impression
``m`` that is anomaly-free, and the paper gets it from the bottleneck alone. On pill the bottleneck does not do
it: a code per position keeps the normal detail (the embossed "FF", the red speckles) and with it the defects
(a crack is drawn into m, docs/fidelity.md), while one code per image drops both. With ``ienet.train_defects = p``
each training image is, with probability p, given a drawn defect before ``E_M`` sees it, and every
reconstruction term (Eq. 6's L1, the structural term) still compares ``m`` with the *clean* image, so that
IE-Net learns to paint normal texture over whatever does not belong, as DRAEM's reconstructive network does
(Zavrtanik et al., 2021), while its code per position keeps the normal detail it is shown. On pill it did not:
the impression still copied cracks, and ``utad choose`` kept ``cpu-mvtec`` (docs/fidelity.md, "Drawn defects on
IE-Net's training inputs").

The defects here are deliberately unlike the ones ``data.evaluate_on=synthetic`` draws for ``utad choose``
(ellipse stains, pasted rectangles, polylines; ``data/synthetic.py``): their masks are thresholded smooth noise,
either blobs (the noise above a high quantile) or thin contour lines (the noise near its median, inside a random
window: crack-like), filled with a random colour, with another training image of the batch (shifted), or with
the image itself brightened, darkened or inverted, at 50-100 % opacity. A run trained with them still meets
similar colour spots in ``utad choose``'s drawn defects, so ``utad choose`` favours it over runs trained without
them: a choice between such runs leans its way (on pill it still preferred the run without).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

FILLS = ("colour", "other", "self")


def _smooth_noise(n: int, h: int, w: int, cells: int, device, generator) -> torch.Tensor:
    """(n, 1, h, w) noise: uniform values on a ``cells`` x ``cells`` grid, bicubically upsampled."""
    grid = torch.rand((n, 1, cells, cells), generator=generator).to(device)  # a CPU generator, any device
    return F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=False)


def defect_masks(
    n: int, h: int, w: int, generator: torch.Generator | None = None, device=None
) -> torch.Tensor:
    """(n, 1, h, w) boolean masks, each one blob set (0.5 to 4 % of the image) or crack-like lines."""
    masks = torch.zeros((n, 1, h, w), dtype=torch.bool, device=device)
    for i in range(n):
        cells = int(torch.randint(4, 17, (1,), generator=generator))
        noise = _smooth_noise(1, h, w, cells, device, generator)[0, 0]
        if float(torch.rand((), generator=generator)) < 0.5:  # blobs: the noise's highest 0.5-4 %
            area = 0.005 + 0.035 * float(torch.rand((), generator=generator))
            masks[i, 0] = noise > torch.quantile(noise.flatten(), 1 - area)
        else:  # a thin contour line of the noise near its median, kept inside a window of 1/4 to 1/2 side
            width = 0.01 + 0.02 * float(torch.rand((), generator=generator))
            line = (noise - noise.median()).abs() < width
            wh = int(h * (0.25 + 0.25 * float(torch.rand((), generator=generator))))
            ww = int(w * (0.25 + 0.25 * float(torch.rand((), generator=generator))))
            y0 = int(torch.randint(0, h - wh + 1, (1,), generator=generator))
            x0 = int(torch.randint(0, w - ww + 1, (1,), generator=generator))
            window = torch.zeros_like(line)
            window[y0 : y0 + wh, x0 : x0 + ww] = True
            masks[i, 0] = line & window
    return masks


def draw_train_defects(
    x: torch.Tensor, p: float, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """x (B, C, H, W) in [0, 1] -> (x with a defect on each image picked with probability p, masks (B, 1, H, W)).

    Images not picked come back unchanged with an empty mask; p = 0 returns x itself."""
    b, c, h, w = x.shape
    masks = torch.zeros((b, 1, h, w), dtype=torch.bool, device=x.device)
    if p <= 0:
        return x, masks
    picked = torch.rand(b, generator=generator) < p
    idx = picked.nonzero().flatten().tolist()
    if not idx:
        return x, masks
    masks[idx] = defect_masks(len(idx), h, w, generator, x.device)
    out = x.clone()
    for i in idx:
        kind = FILLS[int(torch.randint(0, len(FILLS), (1,), generator=generator))]
        if kind == "colour":
            fill = torch.rand((c, 1, 1), generator=generator).to(x).expand(c, h, w)
        elif kind == "other" and b > 1:
            j = (i + int(torch.randint(1, b, (1,), generator=generator))) % b
            dy, dx = (int(v) for v in torch.randint(0, min(h, w), (2,), generator=generator))
            fill = torch.roll(x[j], shifts=(dy, dx), dims=(1, 2))
        else:  # the image itself: brighter, darker or inverted
            mode = int(torch.randint(0, 3, (1,), generator=generator))
            factor = 1.3 + 0.5 * float(torch.rand((), generator=generator))
            fill = (x[i] * factor).clamp(0, 1) if mode == 0 else x[i] / factor if mode == 1 else 1 - x[i]
        opacity = 0.5 + 0.5 * float(torch.rand((), generator=generator))
        blend = (1 - opacity) * x[i] + opacity * fill
        out[i] = torch.where(masks[i], blend, x[i])
    return out, masks
