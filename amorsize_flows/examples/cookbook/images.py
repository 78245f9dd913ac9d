"""Image features: real photographs decoded from JPEG files, resized, described by HOG."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from skimage import color, feature, io, transform
from sklearn.datasets import load_sample_images

import amorsize_flows as amz

__all__ = ["featurize_images", "hog_features", "write_tiles"]

TILE = 160  # pixels of a tile cut from a photograph
SIZE = 64  # pixels of the square each image is resized to before HOG


def write_tiles(folder: str | Path, count: int) -> list[str]:
    """``count`` JPEG files in ``folder``: tiles of scikit-learn's two sample photographs at
    reproducible places; returns their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    photos = load_sample_images().images
    paths = []
    for index in range(count):
        photo = photos[index % len(photos)]
        rng = np.random.default_rng(index)
        top = int(rng.integers(0, photo.shape[0] - TILE))
        left = int(rng.integers(0, photo.shape[1] - TILE))
        path = folder / f"tile-{index:05d}.jpg"
        Image.fromarray(photo[top : top + TILE, left : left + TILE]).save(path, quality=90)
        paths.append(str(path))
    return paths


def hog_features(path: str) -> np.ndarray:
    """Decode one image file and describe it: grey, SIZE x SIZE, histograms of gradients."""
    grey = color.rgb2gray(io.imread(path))
    small = transform.resize(grey, (SIZE, SIZE), anti_aliasing=True)
    return feature.hog(small, pixels_per_cell=(8, 8), cells_per_block=(2, 2)).astype(np.float32)


def featurize_images(paths: Sequence[str], **options: Any) -> np.ndarray:
    """The stage: one row of HOG features per image file, in the order of ``paths``."""
    return np.stack(amz.execute(hog_features, paths, **options))
