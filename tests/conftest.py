"""Shared fixtures: small real images from the bundled MVTec AD bottle demo subset."""

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

DEMO_ROOT = Path(__file__).resolve().parents[1] / "anomalib_ssad" / "demo" / "mvtec_ad"
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def read_rgb(path: Path, size: int) -> torch.Tensor:
    """Image file -> float tensor [3, size, size] in [0, 1]."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert image is not None, path
    image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)[:, :, ::-1]
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 255.0


@pytest.fixture(scope="session")
def demo_root() -> Path:
    return DEMO_ROOT


@pytest.fixture(scope="session")
def bottle_images() -> torch.Tensor:
    """The demo's 30 normal training images at 128 px, [30, 3, 128, 128] in [0, 1]."""
    files = sorted((DEMO_ROOT / "bottle" / "train" / "good").glob("*.png"))
    return torch.stack([read_rgb(file, 128) for file in files])
