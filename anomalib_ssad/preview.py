# Copyright (C) 2026 anomalib-ssad developers
# SPDX-License-Identifier: Apache-2.0

"""Preview the synthetic anomalies: a PNG grid of generated samples with each defect outlined in red.

Reads the normal training images of a category (``<root>/<category>/train/good``) or any folder of images,
generates one sample per image with a preset of :class:`SyntheticAnomalyGenerator`, and writes a grid with a
caption per sample (``normal``, ``big`` or ``small``; ``background`` for a patch with too little object to
get a defect).

Example:
    Command line (also installed as ``ssad-preview``)::

        python -m anomalib_ssad.preview --root datasets/mvtec_ad --category bottle --out preview.png
        python -m anomalib_ssad.preview --images my_images/ --preset patch --num 8 --out patches.png
"""

import argparse
import math
from pathlib import Path

import cv2
import numpy as np
import torch

from anomalib_ssad.components.synthetic import SyntheticAnomalyGenerator
from anomalib_ssad.image_files import list_image_files, read_uint8

LABEL_NAMES = ("normal", "big", "small")
# Patches (32 px) are upscaled for display so that the outline and caption stay readable.
MIN_TILE_SIZE = 160
CAPTION_HEIGHT = 18


def _image_paths(folder: Path) -> list[Path]:
    try:
        return list_image_files(folder)
    except ValueError as error:
        raise SystemExit(str(error)) from None


def _load(paths: list[Path], image_size: int) -> torch.Tensor:
    """Load images as a ``[N, C, S, S]`` batch; grayscale if all of them are single-channel files."""
    try:
        arrays = [read_uint8(path) for path in paths]
    except ValueError as error:
        raise SystemExit(str(error)) from None
    arrays = [cv2.resize(array, (image_size, image_size), interpolation=cv2.INTER_AREA) for array in arrays]
    grayscale = all(array.ndim == 2 for array in arrays)
    tensors = []
    for array in arrays:
        if grayscale:
            array = array[..., None]
        elif array.ndim == 2:
            array = cv2.cvtColor(array, cv2.COLOR_GRAY2RGB)
        tensors.append(torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).float() / 255)
    return torch.stack(tensors)


def _tile(image: torch.Tensor, mask: torch.Tensor, caption: str) -> np.ndarray:
    """Render one sample as BGR uint8 with the defect outlined in red and a caption bar below."""
    array = (image.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    array = cv2.cvtColor(array, cv2.COLOR_GRAY2BGR if array.shape[2] == 1 else cv2.COLOR_RGB2BGR)
    mask_np = mask.numpy().astype(np.uint8)
    scale = max(1, math.ceil(MIN_TILE_SIZE / array.shape[0]))
    if scale > 1:
        array = cv2.resize(array, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
        mask_np = cv2.resize(mask_np, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(mask_np, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(array, contours, -1, (0, 0, 255), thickness=1)
    bar = np.full((CAPTION_HEIGHT, array.shape[1], 3), 255, dtype=np.uint8)
    cv2.putText(bar, caption, (3, CAPTION_HEIGHT - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([array, bar])


def render_grid(images: torch.Tensor, masks: torch.Tensor, captions: list[str]) -> np.ndarray:
    """Arrange rendered samples in a near-square grid.

    Args:
        images: ``[N, C, h, w]`` images in ``[0, 1]``.
        masks: ``[N, h, w]`` defect masks.
        captions: One caption per sample.

    Returns:
        The grid as a BGR uint8 array.
    """
    tiles = [_tile(image, mask, caption) for image, mask, caption in zip(images, masks, captions, strict=True)]
    columns = math.ceil(math.sqrt(len(tiles)))
    blank = np.full_like(tiles[0], 255)
    tiles += [blank] * (-len(tiles) % columns)
    pad = 4
    rows = [
        np.concatenate([np.pad(tile, ((pad, pad), (pad, pad), (0, 0)), constant_values=255) for tile in row], axis=1)
        for row in (tiles[start : start + columns] for start in range(0, len(tiles), columns))
    ]
    return np.concatenate(rows)


def main(argv: list[str] | None = None) -> None:
    """Run the preview command.

    Args:
        argv: Command-line arguments; ``sys.argv[1:]`` when ``None``.

    Raises:
        SystemExit: On a missing folder, a folder without images or an unreadable image (message, no traceback).
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--root", type=Path, help="dataset root in MVTec layout (with --category)")
    source.add_argument("--images", type=Path, help="any folder of images")
    parser.add_argument("--category", default="bottle", help="category under --root (default: bottle)")
    parser.add_argument("--out", type=Path, default=Path("preview.png"), help="output PNG")
    parser.add_argument("--preset", choices=["image", "patch", "sadsa"], default="image")
    parser.add_argument("--num", type=int, default=16, help="number of samples")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-size", type=int, default=256, help="images are resized to this square size")
    args = parser.parse_args(argv)
    if args.num < 1 or args.image_size < 1:
        parser.error("--num and --image-size must be positive")

    folder = args.images if args.images is not None else args.root / args.category / "train" / "good"
    paths = _image_paths(folder)
    rng = np.random.default_rng(args.seed)
    chosen = [paths[index] for index in rng.choice(len(paths), size=args.num, replace=len(paths) < args.num)]
    images = _load(chosen, args.image_size)

    presets = {
        "image": SyntheticAnomalyGenerator.image_level,
        "patch": SyntheticAnomalyGenerator.patch_level,
        "sadsa": SyntheticAnomalyGenerator.sadsa,
    }
    generator = presets[args.preset]()
    # Cycling the labels shows every class, which a uniform draw over a few samples may not.
    wanted = torch.arange(args.num) % 3
    try:
        outputs, labels, masks = generator(images, generator=torch.Generator().manual_seed(args.seed), labels=wanted)
    except ValueError as error:
        raise SystemExit(str(error)) from None
    captions = [
        LABEL_NAMES[label] + (", background" if label != asked and args.preset == "patch" else "")
        for label, asked in zip(labels.tolist(), wanted.tolist(), strict=True)
    ]
    grid = render_grid(outputs, masks[:, 0], captions)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(args.out), grid):
        msg = f"Cannot write {args.out}"
        raise SystemExit(msg)
    mode = generator.object_masker.resolved_mode
    print(f"Wrote {args.out} ({args.num} samples, preset {args.preset}, object mask {mode})")


if __name__ == "__main__":
    main()
