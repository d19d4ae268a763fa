"""Reading image folders: one place for the profiler, the SC/EF hook's probes and the inferencer."""
from __future__ import annotations

import os
import os.path as osp
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

IMAGE_EXTS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp')


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


def read_rgb(path: str, size: Sequence[int] | None = None) -> Tensor:
    """An image as uint8 RGB (3, H, W), resized (bilinear) to ``size`` = (H, W) when given.

    Raises:
        OSError: the file cannot be read as an image.
    """
    from PIL import Image
    with Image.open(path) as im:
        im = im.convert('RGB')
        if size is not None:
            im = im.resize((int(size[1]), int(size[0])), Image.BILINEAR)
        arr = np.asarray(im, dtype=np.uint8).copy()
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()
