import cv2
import numpy as np
import pytest

from anomalib_ssad.preview import main


@pytest.mark.parametrize("preset", ["image", "patch", "sadsa"])
def test_preview_writes_a_grid(tmp_path, demo_root, preset):
    out = tmp_path / "grid.png"
    main(["--root", str(demo_root), "--category", "bottle", "--out", str(out), "--preset", preset, "--num", "6"])
    grid = cv2.imread(str(out))
    assert grid is not None and grid.ndim == 3
    red = (grid[..., 2] > 200) & (grid[..., 1] < 60) & (grid[..., 0] < 60)
    assert red.any(), "no defect outline drawn"


def test_preview_of_grayscale_folder(tmp_path):
    folder = tmp_path / "gray"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for index in range(3):
        cv2.imwrite(str(folder / f"{index}.png"), rng.integers(0, 255, (96, 160), dtype=np.uint8))
    out = tmp_path / "gray.png"
    main(["--images", str(folder), "--out", str(out), "--num", "3", "--image-size", "64"])
    assert cv2.imread(str(out)) is not None


def test_preview_errors_name_the_path(tmp_path):
    with pytest.raises(SystemExit, match="not found"):
        main(["--images", str(tmp_path / "missing"), "--out", str(tmp_path / "x.png")])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SystemExit, match=str(empty)):
        main(["--images", str(empty), "--out", str(tmp_path / "x.png")])
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "bad.png").write_bytes(b"not a png")
    with pytest.raises(SystemExit, match=r"bad\.png"):
        main(["--images", str(broken), "--out", str(tmp_path / "x.png")])
