"""Reading images and masks of any size and mode into float arrays of a fixed size.

Images: RGB, grey (L, 1-bit), RGBA/LA (alpha dropped), palette (P), 16-bit and 32-bit integer (I;16, I) and
float (F) modes are converted to ``channels`` (3 = RGB, 1 = grey) in [0, 1] and resized with bilinear
interpolation (antialiased when shrinking). Masks are resized first (bilinear), then binarised at 0.5, so a mask
stays aligned with its resized image.

Hostile or unusual files: an image whose header claims more than ``MAX_IMAGE_PIXELS`` pixels is refused before
its pixels are decoded (decompression-bomb guard, Pillow's limit set explicitly and enforced as an error, not a
warning); a JPEG's EXIF orientation is applied, so the array is the picture as a viewer shows it; an animated
GIF/PNG/WebP gives its first frame; truncated, corrupt or non-image files are a ``DataError`` naming the file.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from utad.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif")
MAX_IMAGE_PIXELS = 20000 * 20000  # larger claims are refused before decoding (a 900 px MVTec image is 0.8 M)
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS  # Pillow warns above it; open_image turns the warning into an error


def is_image_file(path: str | os.PathLike) -> bool:
    """True when the file name has an image suffix we read (case-insensitive)."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def open_image(path: str | os.PathLike) -> Image.Image:
    """Open and fully decode an image; any failure becomes a ``DataError`` naming the file."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if not path.is_file():
        raise DataError(f"{path}: not a file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(path)
            w, h = img.size
            img.load()  # decode now: truncated or corrupt files fail here, not later in a worker
            img = ImageOps.exif_transpose(img)  # the picture as viewers show it (EXIF orientation)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        claimed = re.search(r"\((\d+) pixels\)", str(exc))
        n = f"{int(claimed.group(1))} pixels" if claimed else "more pixels than allowed"
        raise DataError(
            f"{path}: image too large: its header claims {n}, over the limit of {MAX_IMAGE_PIXELS} "
            "(refused before decoding, a guard against decompression bombs)"
        ) from None
    except UnidentifiedImageError:
        raise DataError(f"{path}: not an image file (cannot identify the format)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise DataError(f"{path}: corrupt or truncated image ({exc})") from None
    if w == 0 or h == 0:
        raise DataError(f"{path}: empty image ({w}x{h})")
    return img


def _to_float(img: Image.Image) -> np.ndarray:
    """Convert any PIL mode to float32 in [0, 1], shape (H, W) or (H, W, 3)."""
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        arr = np.asarray(img, dtype=np.float32) / 65535.0
    elif mode == "I":
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if arr.max(initial=0) <= 65535 else float(2**31 - 1)
        arr = (arr / hi).astype(np.float32)
    elif mode == "F":
        arr = np.asarray(img, dtype=np.float32)
        if arr.max(initial=0) > 1.0:
            arr = arr / 255.0
    elif mode in ("RGB", "L"):
        arr = np.asarray(img, dtype=np.float32) / 255.0
    elif mode in ("LA", "1"):
        arr = np.asarray(img.convert("L"), dtype=np.float32) / 255.0
    else:  # RGBA, P, CMYK, YCbCr, HSV, LAB, ...
        arr = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    return np.clip(arr, 0.0, 1.0)


def load_image(path: str | os.PathLike, size: int | tuple[int, int] | None, channels: int = 3) -> np.ndarray:
    """Load an image as float32 in [0, 1], shape (H, W, channels), resized to ``size`` (int = square).

    ``size=None`` keeps the original size. Grey images are repeated to 3 channels when ``channels == 3``;
    colour images are converted to luminance when ``channels == 1``.
    """
    return image_array(open_image(path), size, channels)


def image_array(img: Image.Image, size: int | tuple[int, int] | None, channels: int = 3) -> np.ndarray:
    """A decoded PIL image as float32 (H, W, channels) in [0, 1], resized (see ``load_image``)."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    return resize(to_channels(_to_float(img), channels), size)


def to_channels(arr: np.ndarray, channels: int) -> np.ndarray:
    """(H, W) or (H, W, 1|3) float array to (H, W, channels): grey repeated, colour to ITU-R 601 luminance."""
    if arr.ndim == 2:
        arr = arr[..., None]
    if channels == 3 and arr.shape[-1] == 1:
        return np.repeat(arr, 3, axis=-1)
    if channels == 1 and arr.shape[-1] == 3:
        return (arr @ np.array([0.299, 0.587, 0.114], dtype=np.float32))[..., None]
    return arr


def resize(arr: np.ndarray, size: int | tuple[int, int] | None) -> np.ndarray:
    """Bilinear resize of a float (H, W, C) array to ``size`` = (H, W) or a square side, antialiased."""
    if size is None:
        return arr.astype(np.float32, copy=False)
    h, w = (size, size) if isinstance(size, int) else size
    if arr.shape[:2] == (h, w):
        return arr.astype(np.float32, copy=False)
    chans = [
        np.asarray(
            Image.fromarray(np.ascontiguousarray(arr[..., c], dtype=np.float32)).resize(
                (w, h), Image.BILINEAR
            )
        )
        for c in range(arr.shape[-1])
    ]
    return np.stack(chans, axis=-1).astype(np.float32)


def load_mask(path: str | os.PathLike, size: int | tuple[int, int] | None) -> np.ndarray:
    """Load a ground-truth mask as bool (H, W): any non-zero pixel is a defect, binarised after resizing."""
    return mask_array(open_image(path), size)


def mask_array(img: Image.Image, size: int | tuple[int, int] | None) -> np.ndarray:
    """A decoded PIL mask as bool (H, W), binarised after resizing (see ``load_mask``)."""
    arr = _to_float(img)
    if arr.ndim == 3:
        arr = arr.max(axis=-1)
    return resize_mask(arr > 0, size)


def resize_mask(binary: np.ndarray, size: int | tuple[int, int] | None) -> np.ndarray:
    """A bool (H, W) mask resized bilinearly to ``size`` and binarised at 0.5 (how every mask is resized)."""
    return resize(binary.astype(np.float32)[..., None], size)[..., 0] >= 0.5


def image_info(path: str | os.PathLike) -> tuple[tuple[int, int], str]:
    """(width, height) and PIL mode of an image, decoding it fully so corrupt files are reported."""
    img = open_image(path)
    return img.size, img.mode
