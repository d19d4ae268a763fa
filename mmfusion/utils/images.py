"""Reading images: one place for the profiler, the SC/EF hook's probes and the inferencer.

Every reader names the file when it cannot be read (empty, not an image, truncated, beyond Pillow's pixel limit)
with :class:`~mmfusion.utils.errors.UnreadableImageError`. ``read_image(..., bounded=True)`` keeps the memory of a
huge image read at a small size low (a JPEG is decoded at a reduced scale).
"""
from __future__ import annotations

import os
import os.path as osp
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from .errors import UnreadableImageError

IMAGE_EXTS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp')
# ImageNet statistics in RGB order on the 0-255 scale: what every encoder here receives (SPEC §5).
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


def normalize(images: Tensor, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> Tensor:
    """uint8 RGB -> float32 (x - mean) / std.

    Args:
        images (Tensor): (B, 3, H, W) uint8.
        mean (Sequence[float]): per-channel mean, 0-255 scale. Defaults to ImageNet's.
        std (Sequence[float]): per-channel std, 0-255 scale. Defaults to ImageNet's.
    """
    m = torch.as_tensor(mean, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    return (images.float() - m) / s


def list_images(folder: str, num: int | None = None, exts: Sequence[str] = IMAGE_EXTS) -> list[str]:
    """The files of ``folder`` ending in ``exts`` (not recursive), sorted by name, the first ``num`` of them.

    Raises:
        FileNotFoundError: the folder does not exist or holds no image (the message names the extensions).
    """
    if not osp.isdir(folder):
        raise FileNotFoundError(f'image folder not found: {folder}')
    files = sorted(f for f in os.listdir(folder) if f.lower().endswith(tuple(exts)))
    if not files:
        raise FileNotFoundError(f'no images ({", ".join(exts)}) in folder {folder}')
    return [osp.join(folder, f) for f in files[:num]]


def _open(path: str):
    """``PIL.Image.open`` (header only) with the failure named."""
    from PIL import Image, UnidentifiedImageError
    if not osp.isfile(path):
        raise FileNotFoundError(f'image not found: {path}')
    if osp.getsize(path) == 0:
        raise UnreadableImageError(f'cannot read image {path}: the file is empty (0 bytes); replace or remove it')
    try:
        return Image.open(path)
    except Image.DecompressionBombError as e:
        raise UnreadableImageError(f'cannot read image {path}: {e}; downscale it first') from e
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise UnreadableImageError(f'cannot read image {path}: not an image file Pillow can decode '
                                   f'({type(e).__name__}); replace or remove it') from e


def _decode(im, path: str) -> None:
    """Decode the pixels of an opened image (a truncated or corrupt file fails here, not at its header)."""
    try:
        im.load()
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise UnreadableImageError(f'cannot read image {path}: its data is corrupt or truncated ({e}); replace or '
                                   'remove it') from e


def image_size(path: str) -> tuple[int, int]:
    """``(width, height)`` of an image from its header (no pixel is decoded).

    Raises:
        FileNotFoundError: ``path`` is not a file.
        UnreadableImageError: the file is empty, not an image, or beyond Pillow's pixel limit.
    """
    with _open(path) as im:
        return im.size


def check_image(path: str) -> tuple[int, int]:
    """Decode ``path`` fully to make sure it is a readable image; returns ``(width, height)``.

    Raises:
        FileNotFoundError: ``path`` is not a file.
        UnreadableImageError: the file is empty, not an image, corrupt or truncated.
    """
    with _open(path) as im:
        _decode(im, path)
        return im.size


def fit_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """``(w, h)`` with the aspect ratio kept and the longer side at most ``max_side`` (never upscaled)."""
    scale = min(1.0, max_side / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def read_image(path: str, size: Sequence[int] | None = None, bounded: bool = False) -> np.ndarray:
    """An image as a uint8 RGB array (H, W, 3), resized (bilinear, antialiased) to ``size`` = (W, H) when given.

    Args:
        path (str): The image file.
        size (Sequence[int], optional): ``(W, H)`` to resize to. Default: None (as stored).
        bounded (bool): Keep memory low when reading a huge image at a small ``size``: a JPEG is decoded at the
            smallest scale that is still at least ``size`` (Pillow's ``draft``) and large reductions start with a
            box reduction. The pixels differ slightly from a plain resize. Default: False.

    Raises:
        FileNotFoundError: ``path`` is not a file.
        UnreadableImageError: the file is empty, not an image, corrupt or truncated.
    """
    from PIL import Image
    size = None if size is None else (int(size[0]), int(size[1]))
    with _open(path) as im:
        if bounded and size is not None and im.format == 'JPEG':
            im.draft('RGB', size)
        _decode(im, path)
        rgb = im.convert('RGB')
    if size is not None and rgb.size != size:
        rgb = rgb.resize(size, Image.BILINEAR, reducing_gap=3.0 if bounded else None)
    return np.asarray(rgb, dtype=np.uint8).copy()


def read_rgb(path: str, size: Sequence[int] | None = None) -> Tensor:
    """An image as uint8 RGB (3, H, W), resized (bilinear) to ``size`` = (H, W) when given.

    Raises:
        FileNotFoundError: ``path`` is not a file.
        UnreadableImageError: the file cannot be read as an image (the message names it).
    """
    arr = read_image(path, None if size is None else (int(size[1]), int(size[0])))
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()
