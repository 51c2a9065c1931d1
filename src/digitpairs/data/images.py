"""A digit image of any size and mode, prepared as MNIST's digits were.

MNIST's digits were fitted into a 20x20 box keeping their aspect ratio (anti-aliased, hence grey levels), then placed
in a 28x28 field so that their centre of mass falls on its centre, bright ink on black. `read` does the same to a
PNG or JPEG: grayscale (transparency over a background that contrasts with the ink), the ink made bright on black
(the paper is the colour of the border), the paper's level subtracted and the contrast stretched to 0..255, cropped
to the ink, fitted into 20x20 (Lanczos), centred by its centre of mass. `prepare` then applies a study's input
pipeline: 2x2 average pooling for size-14 models and the training pairs' normalisation.
"""

import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, JpegImagePlugin, UnidentifiedImageError

from digitpairs.base.errors import UserError, reason

SIDE, BOX = 28, 20  # MNIST's field and the box its digits were fitted into
BORDER = 0.05  # the outer 5% of each side (at least one pixel) is taken to be paper
MIN_CONTRAST = 32  # ink must differ from the paper by this much (of 255), or the image holds no ink
MAX_SIDE = 1024  # larger images are shrunk by a whole factor first (a 48-megapixel photo: by 8)
MAX_PIXELS = 25_000_000  # decoded at most (a JPEG after its decoder's own scaling): a 1 MB PNG can say 170 million
FLOOR = 0.1  # after stretching, what is below this fraction of the ink's peak is paper texture or noise: set to 0


def read(path: Path) -> torch.Tensor:
    """(28, 28) float32, 0..255, bright ink on black, centred like an MNIST digit; UserError in one line if the
    file cannot be read as an image or holds no ink."""
    path = Path(path)
    try:
        odd = path.exists() and not path.is_file()  # a folder, or a FIFO that would never end
    except OSError:  # a folder it may not look into: Pillow's open says so below
        odd = False
    if odd:
        raise UserError(f"cannot read the image {str(path)!r} (not a plain file): give a PNG or JPEG file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # checked below, before decoding
            with Image.open(path, formats=["PNG", "JPEG"]) as im:  # the formats promised; no others
                decode_small(im, path)
                im.load()
                gray = grayscale(ImageOps.exif_transpose(im))
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - whatever a decoder raises on a user's file, it is one line
        why = "not an image Pillow can read" if isinstance(e, UnidentifiedImageError) else reason(e)
        raise UserError(f"cannot read the image {path} ({why}): give a PNG or JPEG file") from None
    ink = ink_on_black(gray)
    if ink is None:
        raise UserError(f"{path} holds no ink (a blank or uniform image): give a picture of one digit")
    return centre(fit(crop(ink)))


def decode_small(im: Image.Image, path: Path) -> None:
    """Before anything is decoded: a JPEG is set to decode at the smallest scale of its decoder (1/2, 1/4, 1/8)
    that keeps MAX_SIDE pixels a side (draft mode), and an image that would still decode to more than MAX_PIXELS is
    refused, in one line. The header alone says the size: a small file may promise a huge image."""
    if isinstance(im, JpegImagePlugin.JpegImageFile):  # a JPEG, or a phone's MPO (a JPEG with more frames)
        im.draft(im.mode, (MAX_SIDE, MAX_SIDE))
    w, h = im.size
    if w * h > MAX_PIXELS:
        raise UserError(f"the image {path} is {w} x {h} pixels, more than this reads ({MAX_PIXELS // 10**6} million): "
                        "give a smaller picture of the digit")


def grayscale(im: Image.Image) -> np.ndarray:
    """(H, W) float32 0..255 of any mode, at most MAX_SIDE pixels a side; transparency composited over white for
    dark ink, over black for light."""
    if im.mode in ("P", "PA"):
        im = im.convert("RGBA")  # a palette may carry transparency
    deep = im.mode.startswith("I") or im.mode == "F"  # 16- or 32-bit grey
    im = im.convert("LA" if "A" in im.mode or "a" in im.mode else "F" if deep else "L")
    factor = -(-max(im.size) // MAX_SIDE)
    if factor > 1:  # a box average: the digit ends up 20 pixels high, and a photo's pixels cost memory
        im = im.reduce(factor)
    if im.mode != "LA":
        a = np.asarray(im, dtype=np.float32)
        return a * (255 / a.max()) if deep and a.max() > 255 else a  # deep grey: scaled by its own range
    gray, alpha = (np.asarray(c, dtype=np.float32) for c in im.split())
    alpha /= 255
    opaque = alpha > 0.5
    dark = not opaque.any() or gray[opaque].mean() < 128  # the drawn pixels are dark: paper is white
    return gray * alpha + (255.0 if dark else 0.0) * (1 - alpha)


def ink_on_black(gray: np.ndarray) -> np.ndarray | None:
    """Bright ink on a black background, 0..255, its peak at 255 and paper texture at 0; None without ink."""
    h, w = gray.shape
    bh, bw = max(1, round(h * BORDER)), max(1, round(w * BORDER))
    border = np.concatenate([gray[:bh].ravel(), gray[-bh:].ravel(), gray[:, :bw].ravel(), gray[:, -bw:].ravel()])
    paper = float(np.median(border))
    if paper > 127:  # dark ink on light paper
        gray, paper, border = 255 - gray, 255 - paper, 255 - border
    peak = float(gray.max())
    if peak - paper < MIN_CONTRAST:
        return None
    # the brightest paper the border shows (shading, texture, noise), up to a third of the ink's contrast: a digit
    # that touches the border must not count as paper
    paper = min(float(np.percentile(border, 95)), paper + (peak - paper) / 3)
    ink = np.clip((gray - paper) * (255 / (peak - paper)), 0, 255)
    ink[ink < FLOOR * 255] = 0
    return ink


def crop(ink: np.ndarray) -> np.ndarray:
    """The smallest rectangle holding every nonzero pixel."""
    rows, cols = np.flatnonzero(ink.any(1)), np.flatnonzero(ink.any(0))
    return ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


def fit(ink: np.ndarray) -> np.ndarray:
    """Scaled (Lanczos, anti-aliased) so that its longer side is 20, keeping the aspect ratio."""
    h, w = ink.shape
    scale = BOX / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    if size == (w, h):
        return ink
    out = Image.fromarray(ink.astype(np.float32)).resize(size, Image.Resampling.LANCZOS)
    return np.clip(np.asarray(out, dtype=np.float64), 0, 255)  # Lanczos overshoots at sharp edges


def centre(ink: np.ndarray) -> torch.Tensor:
    """(28, 28) float32 with the ink's centre of mass on pixel (14, 14), as in MNIST (whose digits' centres of mass
    average 14.0 in both axes); moved by whole pixels, and no farther than keeps the 20x20 box inside the field."""
    h, w = ink.shape
    total = ink.sum()
    cy = (ink.sum(1) * np.arange(h)).sum() / total
    cx = (ink.sum(0) * np.arange(w)).sum() / total
    top = min(max(round(SIDE / 2 - cy), 0), SIDE - h)
    left = min(max(round(SIDE / 2 - cx), 0), SIDE - w)
    out = np.zeros((SIDE, SIDE), dtype=np.float32)
    out[top:top + h, left:left + w] = ink
    return torch.from_numpy(out)


def prepare(image: torch.Tensor, cfg, norm: tuple[float, float]) -> torch.Tensor:
    """(28, 28) pixel values 0..255 -> (S, S) as a model of this Config saw its images: pooled 2x2 for size 14 (as
    pairs.round_data), then normalised with its training pairs' (mean, SD)."""
    if cfg.size == 14:
        image = F.avg_pool2d(image[None, None], 2)[0, 0]
    mean, std = norm
    return (image - mean) / std
