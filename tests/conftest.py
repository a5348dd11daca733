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


def demo_test_images(demo_root: Path, size: int = 64) -> torch.Tensor:
    """Every test image of the demo bottle subset, [N, 3, size, size] in [0, 1]."""
    return torch.stack([read_rgb(file, size) for file in sorted((demo_root / "bottle" / "test").rglob("*.png"))])


def fit_and_test_on_demo(model, demo_root: Path, tmp_path: Path) -> tuple:
    """Engine fit + test on the demo bottle subset; returns (engine, test metrics)."""
    from anomalib.data import MVTecAD
    from anomalib.engine import Engine

    datamodule = MVTecAD(root=demo_root, category="bottle", num_workers=0, train_batch_size=16, eval_batch_size=8)
    engine = Engine(accelerator="cpu", devices=1, default_root_dir=tmp_path, logger=False, enable_progress_bar=False)
    engine.fit(model=model, datamodule=datamodule)
    metrics = engine.test(model=model, datamodule=datamodule, verbose=False)[0]
    assert {"image_AUROC", "pixel_AUROC", "pixel_AUPRO"} <= set(metrics)
    return engine, metrics


def assert_checkpoint_round_trip(engine, model, demo_root: Path, tmp_path: Path):
    """Save a checkpoint, reload it, and check identical scores and maps on the demo test images."""
    checkpoint = tmp_path / "model.ckpt"
    engine.trainer.save_checkpoint(checkpoint)
    images = demo_test_images(demo_root)
    model.eval()
    with torch.no_grad():
        before = model(images)
    restored = type(model).load_from_checkpoint(checkpoint, map_location="cpu", weights_only=False).eval()
    with torch.no_grad():
        after = restored(images)
    torch.testing.assert_close(after.pred_score, before.pred_score)
    torch.testing.assert_close(after.anomaly_map, before.anomaly_map)
    return restored
