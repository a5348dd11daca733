"""Unusable images (16-bit, blank, truncated) and empty training folders fail or warn, naming the file or folder."""

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from anomalib.data import ImageBatch, MVTecAD
from anomalib.engine import Engine
from PIL import Image
from torchvision.transforms.v2 import Resize

from anomalib_ssad import SSAD
from anomalib_ssad.components.pre_processor import resize_size
from anomalib_ssad.data_checks import (
    aspect_warning,
    check_evaluation_images,
    check_training_images,
    image_problem,
    input_aspect_warning,
    unusable_images,
)


def _write(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    Image.fromarray(array, mode=mode).save(path)
    return path


@pytest.fixture
def bad_files(tmp_path: Path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    files = {
        "good": _write(tmp_path / "good.png", rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)),
        "16bit": _write(tmp_path / "depth.png", rng.integers(0, 65535, (32, 32), dtype=np.uint16)),
        "white": _write(tmp_path / "white.png", np.full((32, 32, 3), 255, np.uint8)),
        "black": _write(tmp_path / "black.png", np.zeros((32, 32), np.uint8)),
    }
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(files["good"].read_bytes()[:200])
    files["truncated"] = truncated
    return files


def test_image_problem_names_what_anomalib_would_destroy(bad_files):
    assert Image.open(bad_files["16bit"]).mode == "I;16"
    assert image_problem(bad_files["good"]) is None
    assert "I;16" in image_problem(bad_files["16bit"]) and "8-bit" in image_problem(bad_files["16bit"])
    assert image_problem(bad_files["white"]).startswith("constant image (every pixel 255, 255, 255)")
    assert image_problem(bad_files["black"]).startswith("constant image (every pixel 0)")
    assert image_problem(bad_files["truncated"]).startswith("unreadable image")
    assert image_problem(bad_files["good"].with_name("missing.png")).startswith("unreadable image")


def _demo_copy(demo_root: Path, tmp_path: Path) -> Path:
    root = tmp_path / "data"
    shutil.copytree(demo_root / "bottle", root / "bottle")
    return root


def test_fit_on_a_16bit_training_image_fails_before_training_naming_the_file(demo_root, tmp_path):
    root = _demo_copy(demo_root, tmp_path)
    bad = _write(root / "bottle" / "train" / "good" / "zz_depth.png", np.full((64, 64), 40000, np.uint16))
    model = SSAD(pretrained=False, warmup_epochs=1, visualizer=False)
    engine = Engine(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, default_root_dir=tmp_path)
    with pytest.raises(ValueError, match=r"1 of 31 training images cannot be used") as error:
        engine.fit(model=model, datamodule=MVTecAD(root=root, category="bottle", num_workers=0))
    assert str(bad) in str(error.value) and "I;16" in str(error.value)
    assert engine.trainer.global_step == 0


def test_aspect_warning_names_the_squeezed_side_and_a_size_that_keeps_the_shape():
    portrait = [(640, 253), (630, 250), (650, 260)]  # KolektorSDD-like strips, height x width
    square = aspect_warning(portrait, (256, 256))
    assert "portrait (median 630x250, height / width 2.52)" in square and "squeezes their height 2.5 times" in square
    assert "[height, width] = [416, 160]" in square and "opposite" not in square
    swapped = aspect_warning(portrait, (256, 640))
    assert "opposite orientation" in swapped and "[height, width] = [640, 256]" in swapped
    assert aspect_warning(portrait, (416, 160)) is None
    assert aspect_warning([(600, 800)], (256, 256)) is None  # 1.33: within the 1.5 tolerance
    landscape = aspect_warning([(300, 800)], (256, 256))
    assert "squeezes their width 2.7 times" in landscape and "[height, width] = [160, 416]" in landscape
    assert aspect_warning([], (256, 256)) is None


def test_resize_size_reads_the_fixed_size_of_a_pre_processor():
    assert resize_size(SSAD.configure_pre_processor(image_size=(416, 160)).transform) == (416, 160)
    assert resize_size(Resize(256)) is None  # scales the shorter side: keeps every aspect ratio
    assert resize_size(None) is None


def test_fit_on_portrait_images_warns_with_a_size_that_keeps_their_shape(demo_root, tmp_path, caplog):
    root = _demo_copy(demo_root, tmp_path)
    for path in (root / "bottle" / "train" / "good").glob("*.png"):
        Image.open(path).resize((48, 144)).save(path)  # width x height: portrait, height / width 3
    datamodule = MVTecAD(root=root, category="bottle", num_workers=0)
    datamodule.setup("fit")
    pre_processor = SSAD.configure_pre_processor(image_size=(64, 64))
    expected = aspect_warning([(144, 48)], (64, 64))
    assert "[height, width] = [96, 32]" in expected
    assert input_aspect_warning(datamodule, pre_processor) == expected
    # The check before training reads each image once and hands its sizes on.
    sizes = check_training_images(datamodule)
    assert sizes == [(144, 48)] * len(datamodule.train_data.samples)
    assert input_aspect_warning(datamodule, pre_processor, sizes) == expected
    assert input_aspect_warning(datamodule, SSAD.configure_pre_processor(image_size=(96, 32))) is None

    model = SSAD(pretrained=False, warmup_epochs=1, finetune_epochs=0, pre_processor=pre_processor, visualizer=False)
    engine = Engine(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, default_root_dir=tmp_path)
    with caplog.at_level(logging.WARNING, logger="anomalib_ssad"):
        engine.fit(model=model, datamodule=MVTecAD(root=root, category="bottle", num_workers=0))
    assert f"SSAD: {expected}" in caplog.text


def test_empty_training_folder_fails_naming_the_root(demo_root, tmp_path):
    root = _demo_copy(demo_root, tmp_path)
    for path in (root / "bottle" / "train" / "good").iterdir():
        path.unlink()
    datamodule = MVTecAD(root=root, category="bottle", num_workers=0)
    datamodule.setup("fit")
    with pytest.raises(ValueError, match=r"MVTecAD found no training images \(root=.*data, category=bottle\)"):
        check_training_images(datamodule)


def test_blank_test_image_is_scored_with_a_warning_naming_it(bad_files, caplog):
    images = torch.rand(3, 3, 32, 32)
    images[1] = 0.5  # a constant image after pre-processing
    paths = [str(bad_files["good"]), "scan_0002.png", str(bad_files["16bit"])]
    problems = unusable_images(images, paths)
    assert [path for path, _ in problems] == ["scan_0002.png", str(bad_files["16bit"])]
    model = SSAD(pretrained=False, visualizer=False)
    with caplog.at_level(logging.WARNING):
        model._warn_unusable(ImageBatch(image=images, image_path=paths))
    assert "scan_0002.png: constant image" in caplog.text


def test_truncated_test_image_fails_naming_the_file(demo_root, tmp_path):
    root = _demo_copy(demo_root, tmp_path)
    bad = root / "bottle" / "test" / "good" / "000.png"
    bad.write_bytes(bad.read_bytes()[:300])
    datamodule = MVTecAD(root=root, category="bottle", num_workers=0, val_split_mode="same_as_test")
    datamodule.setup("test")
    for split in ("test", "val"):
        with pytest.raises(ValueError, match=rf"^1 {split} images cannot be read:\n  .*000.png: unreadable image"):
            check_evaluation_images(datamodule, f"{split}_data")
