"""SSAD through anomalib's CLI and Engine on small real images (the bundled MVTec bottle demo, at 64 px)."""

import csv
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch
import yaml

from tests.conftest import assert_checkpoint_round_trip, demo_test_images, fit_and_test_on_demo

PRE_PROCESSOR = {
    "class_path": "anomalib.pre_processing.PreProcessor",
    "init_args": {
        "transform": {
            "class_path": "torchvision.transforms.v2.Compose",
            "init_args": {
                "transforms": [
                    {"class_path": "torchvision.transforms.v2.Resize", "init_args": {"size": [64, 64]}},
                    {
                        "class_path": "torchvision.transforms.v2.Normalize",
                        "init_args": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
                    },
                ],
            },
        },
    },
}
TINY_MODEL = {
    "backbone": "efficientnet_lite0",
    "warmup_epochs": 1,
    "finetune_epochs": 1,
    "samples_per_epoch": 30,
    "crops_per_image": 1,
    "patch_size": 16,
    "patch_stride": 8,
}
ANOMALIB = str(Path(sys.executable).with_name("anomalib"))


def run(command: list[str], cwd: Path, expect_success: bool = True) -> str:
    env = {**os.environ, "TRUST_REMOTE_CODE": "1"}
    completed = subprocess.run(command, cwd=cwd, capture_output=True, text=True, env=env, check=False)
    assert (completed.returncode == 0) == expect_success, completed.stdout[-3000:] + completed.stderr[-3000:]
    return completed.stdout + completed.stderr


def train_with_cli(workdir: Path, demo_root: Path, class_path: str, init_args: dict) -> Path:
    """`anomalib train --config` of a model on the demo subset at 64 px; writes model.yaml, returns the run folder."""
    config = {
        "seed_everything": 0,
        "default_root_dir": str(workdir / "results"),
        "trainer": {"accelerator": "cpu", "devices": 1, "logger": False, "enable_progress_bar": False},
        "model": {"class_path": class_path, "init_args": {**init_args, "pre_processor": PRE_PROCESSOR}},
        "data": {
            "class_path": "anomalib.data.MVTecAD",
            "init_args": {"root": str(demo_root), "category": "bottle", "num_workers": 0, "eval_batch_size": 8},
        },
    }
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    output = run([ANOMALIB, "train", "--config", "config.yaml"], workdir)
    assert "image_AUROC" in output
    (workdir / "train_output.txt").write_text(output)
    run_dir = workdir / "results" / class_path.rsplit(".", 1)[-1] / "MVTecAD" / "bottle" / "v0"
    assert (run_dir / "weights" / "lightning" / "model.ckpt").exists()
    # predict and export take the model section alone: the README's command writes it
    extract = "import sys, yaml; print(yaml.safe_dump(yaml.safe_load(open(sys.argv[1]))['model']))"
    (workdir / "model.yaml").write_text(run([sys.executable, "-c", extract, str(run_dir / "config.yaml")], workdir))
    assert yaml.safe_load((workdir / "model.yaml").read_text())["class_path"] == class_path
    return run_dir


def assert_onnx_export_matches_checkpoint(
    workdir: Path, run_dir: Path, model_cls: type, demo_root: Path, outputs: tuple[str, ...] = ("pred_score",)
) -> Any:
    """`anomalib export --export_type onnx` of a CLI run gives the checkpoint's outputs on the demo test images.

    Returns the model restored from the run's checkpoint.
    """
    onnxruntime = pytest.importorskip("onnxruntime")
    checkpoint = run_dir / "weights" / "lightning" / "model.ckpt"
    command = [ANOMALIB, "export", "--model", "model.yaml", "--export_type", "onnx", "--ckpt_path", str(checkpoint)]
    run([*command, "--input_size", "[64,64]", "--export_root", "export"], workdir)
    images = demo_test_images(demo_root)
    model = model_cls.load_from_checkpoint(checkpoint, map_location="cpu", weights_only=False).eval()
    with torch.no_grad():
        expected = model(images)
    assert expected.pred_score.std() > 0  # scores are informative, not saturated
    session = onnxruntime.InferenceSession(str(workdir / "export" / "weights" / "onnx" / "model.onnx"))
    for name, value in zip(outputs, session.run(list(outputs), {"input": images.numpy()}), strict=True):
        np.testing.assert_allclose(value, getattr(expected, name).numpy(), rtol=1e-4, atol=1e-4)
    return model


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, demo_root):
    """`anomalib train --config` on the demo subset; returns (workdir, run folder)."""
    workdir = tmp_path_factory.mktemp("cli")
    run_dir = train_with_cli(workdir, demo_root, "anomalib_ssad.SSAD", TINY_MODEL)
    assert any((run_dir / "images").rglob("*.png")), "no anomaly-map images written"
    return workdir, run_dir


def _metric_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if "AUROC" in line or "AUPRO" in line]


def test_cli_runs_with_the_same_seed_repeat_exactly(trained_run, tmp_path, demo_root):
    """anomalib's CLI never applies --seed_everything; the model's seed makes two runs identical anyway."""
    workdir, run_dir = trained_run
    again = train_with_cli(tmp_path, demo_root, "anomalib_ssad.SSAD", TINY_MODEL)
    first = torch.load(run_dir / "weights" / "lightning" / "model.ckpt", weights_only=False)["state_dict"]
    second = torch.load(again / "weights" / "lightning" / "model.ckpt", weights_only=False)["state_dict"]
    assert first.keys() == second.keys()
    for key, value in first.items():
        assert torch.equal(value, second[key]), key
    assert (workdir / "train_output.txt").read_text().count("AUROC") > 0
    assert _metric_lines((tmp_path / "train_output.txt").read_text()) == _metric_lines(
        (workdir / "train_output.txt").read_text()
    )


def test_cli_model_help_lists_the_plugin_arguments(tmp_path):
    output = run([ANOMALIB, "train", "--model.help", "anomalib_ssad.SSAD"], tmp_path)
    choices = "{cosine,euclidean,standardized,cosine+euclidean,cosine+standardized}"
    assert f"--model.cell_distance {choices}" in output
    assert "--model.seed SEED" in output


def test_cli_rejects_a_bad_argument_before_training(trained_run):
    workdir, _ = trained_run
    output = run(
        [ANOMALIB, "train", "--config", "config.yaml", "--model.patch_stride", "0"],
        workdir,
        expect_success=False,
    )
    assert "patch_stride must be > 0, got 0" in output
    assert "Epoch" not in output  # failed at construction, before any training


def test_cli_test_and_predict(trained_run, demo_root):
    workdir, run_dir = trained_run
    checkpoint = str(run_dir / "weights" / "lightning" / "model.ckpt")
    output = run([ANOMALIB, "test", "--config", str(run_dir / "config.yaml"), "--ckpt_path", checkpoint], workdir)
    assert "pixel_AUROC" in output
    images = demo_root / "bottle" / "test" / "broken_large"
    command = [ANOMALIB, "predict", "--model", "model.yaml", "--ckpt_path", checkpoint, "--data", str(images)]
    run([*command, "--default_root_dir", "predictions"], workdir)
    written = sorted(path.name for path in (workdir / "predictions").rglob("*.png"))
    assert written == sorted(path.name for path in images.glob("*.png"))


def test_checkpoint_of_cells_scored_alone_loads_as_it_was_saved_only(trained_run, tmp_path):
    """A dense checkpoint of 0.4 or earlier (no format 3, no context_cells) holds banks of cells alone."""
    from anomalib_ssad import SSAD
    from anomalib_ssad.models.base import CHECKPOINT_FORMAT, CHECKPOINT_FORMAT_KEY

    _, run_dir = trained_run
    saved = torch.load(run_dir / "weights" / "lightning" / "model.ckpt", map_location="cpu", weights_only=False)
    assert saved.pop(CHECKPOINT_FORMAT_KEY) == CHECKPOINT_FORMAT == 4
    assert saved["hyper_parameters"].pop("context_cells") == 0
    torch.save(saved, tmp_path / "old.ckpt")
    restored = SSAD.load_from_checkpoint(tmp_path / "old.ckpt", map_location="cpu", weights_only=False)
    assert restored.model.context_cells == 0
    # A model built to score context (as `anomalib test --ckpt_path ... --model.context_cells 5` builds it) is
    # restored through on_load_checkpoint, which refuses that checkpoint.
    widened = SSAD(**TINY_MODEL, context_cells=5)
    with pytest.raises(ValueError, match=r"0\.4 or earlier.*--model\.context_cells 0"):
        widened.on_load_checkpoint(saved)


def test_cli_predict_writes_a_table_of_scores(trained_run, demo_root):
    """The README's predict command with the PredictionTable callback: one CSV row per image, maps beside it."""
    workdir, run_dir = trained_run
    checkpoint = str(run_dir / "weights" / "lightning" / "model.ckpt")
    images = demo_root / "bottle" / "test" / "broken_large"
    command = [ANOMALIB, "predict", "--model", "model.yaml", "--ckpt_path", checkpoint, "--data", str(images)]
    command += ["--trainer.callbacks+=anomalib_ssad.callbacks.PredictionTable"]
    command += ["--trainer.callbacks.output_dir", "table", "--default_root_dir", "predictions_table"]
    run(command, workdir)
    with (workdir / "table" / "predictions.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert sorted(Path(row["image_path"]).name for row in rows) == sorted(path.name for path in images.glob("*.png"))
    for row in rows:
        assert 0.0 <= float(row["pred_score"]) <= 1.0
        assert row["pred_label"] in {"0", "1"}
        assert cv2.imread(row["anomaly_map"], cv2.IMREAD_UNCHANGED).shape == (64, 64)


def test_export_torch_and_onnx_give_checkpoint_scores(trained_run, demo_root):
    from anomalib_ssad import SSAD

    workdir, run_dir = trained_run
    checkpoint = run_dir / "weights" / "lightning" / "model.ckpt"
    for export_type in ("torch", "onnx"):
        command = [ANOMALIB, "export", "--model", "model.yaml", "--export_type", export_type]
        command += ["--ckpt_path", str(checkpoint), "--input_size", "[64,64]", "--export_root", "export"]
        run(command, workdir)

    images = demo_test_images(demo_root)
    model = SSAD.load_from_checkpoint(checkpoint, map_location="cpu", weights_only=False).eval()
    with torch.no_grad():
        expected = model(images)
    assert expected.pred_score.std() > 0  # scores are informative, not saturated

    exported = torch.load(workdir / "export" / "weights" / "torch" / "model.pt", weights_only=False)["model"].eval()
    with torch.no_grad():
        torch_scores = exported(images).pred_score
    torch.testing.assert_close(torch_scores, expected.pred_score, atol=1e-5, rtol=1e-4)

    onnxruntime = pytest.importorskip("onnxruntime")
    session = onnxruntime.InferenceSession(str(workdir / "export" / "weights" / "onnx" / "model.onnx"))
    # as the README documents: one raw [0, 1] image input, post-processed outputs
    assert [node.name for node in session.get_inputs()] == ["input"]
    assert [node.name for node in session.get_outputs()] == ["pred_score", "pred_label", "anomaly_map", "pred_mask"]
    onnx_scores = session.run(["pred_score"], {session.get_inputs()[0].name: images.numpy()})[0]
    np.testing.assert_allclose(onnx_scores, expected.pred_score.numpy(), atol=1e-4)


def test_engine_fit_and_checkpoint_round_trip(tmp_path, demo_root):
    """Python Engine, image-level localization (Grad-CAM): reloaded checkpoint gives identical outputs."""
    from anomalib_ssad import SSAD

    model = SSAD(
        **TINY_MODEL,
        localization="image",
        memory_bank_source="train",
        pre_processor=SSAD.configure_pre_processor(image_size=(64, 64)),
        visualizer=False,
    )
    engine, _ = fit_and_test_on_demo(model, demo_root, tmp_path)
    assert 0 < len(model.model.scorer.banks[0]) <= model.hparams.memory_bank_size
    restored = assert_checkpoint_round_trip(engine, model, demo_root, tmp_path)
    torch.testing.assert_close(restored.model.scorer.banks[0].memory_bank, model.model.scorer.banks[0].memory_bank)


def test_ddp_two_processes_fit_one_normal_model_from_all_images(trained_run, tmp_path, demo_root):
    """Plain `--trainer.strategy ddp` with 2 CPU processes (gloo): runs, and the checkpoint's normal model comes
    from every training image, as in one process (each process embeds half and the halves are gathered)."""
    from anomalib_ssad import SSAD

    workdir, run_dir = trained_run
    config = yaml.safe_load((workdir / "config.yaml").read_text())
    config["default_root_dir"] = str(tmp_path / "results")
    config["trainer"].update({"devices": 2, "strategy": "ddp", "accelerator": "cpu"})
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    output = run([ANOMALIB, "train", "--config", "config.yaml"], tmp_path)
    assert "image_AUROC" in output

    def load(run_folder: Path) -> SSAD:
        checkpoint = run_folder / "weights" / "lightning" / "model.ckpt"
        return SSAD.load_from_checkpoint(checkpoint, map_location="cpu", weights_only=False).eval()

    single, ddp = load(run_dir), load(tmp_path / "results" / "SSAD" / "MVTecAD" / "bottle" / "v0")
    # 30 images x 8 x 8 cells at 64 px, shared by the 3 bank draws, fit in each draw's banks whole (less the
    # held-out tenth): their size counts the images every process contributed; one process's half gives 288.
    for single_member, ddp_member in zip(single.model.scorer.members, ddp.model.scorer.members, strict=True):
        for single_bank, ddp_bank in zip(single_member.banks, ddp_member.banks, strict=True):
            assert len(single_bank) == 30 * 8 * 8 // 3 - 64
            assert ddp_bank.memory_bank.shape == single_bank.memory_bank.shape
    images = demo_test_images(demo_root)
    with torch.no_grad():
        single_scores, ddp_scores = single(images).pred_score, ddp(images).pred_score
    assert torch.corrcoef(torch.stack([single_scores, ddp_scores]))[0, 1] > 0.8
