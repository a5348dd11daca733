"""Every shipped anomalib config builds its model and datamodule with the arguments it names."""

import importlib
import inspect
from pathlib import Path

import pytest
import yaml

from anomalib_ssad.components.pre_processor import resize_size
from anomalib_ssad.data_checks import input_aspect_warning
from tests.conftest import SHARED_DATA

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").rglob("*.yaml"))


def build(spec: dict):
    """The object a ``class_path`` / ``init_args`` spec names, its nested specs (e.g. a pre_processor) built too."""
    module_name, _, class_name = spec["class_path"].rpartition(".")
    return getattr(importlib.import_module(module_name), class_name)(**_built(spec.get("init_args") or {}))


def _built(value):
    if isinstance(value, dict):
        return build(value) if "class_path" in value else {key: _built(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_built(item) for item in value]
    return value


@pytest.mark.parametrize("config", CONFIGS, ids=[path.stem for path in CONFIGS])
def test_config_builds(config, monkeypatch):
    spec = yaml.safe_load(config.read_text())
    assert set(spec) >= {"model", "data", "trainer"}
    model_args = spec["model"]["init_args"]
    if model_args.get("backbone") == "resnet18":  # no ResNet-18 weights offline: check the arguments only
        model_args = {**model_args, "pretrained": False}
    model = build({**spec["model"], "init_args": model_args})
    assert type(model).__name__ == spec["model"]["class_path"].rpartition(".")[2]
    datamodule = build(spec["data"])
    assert datamodule.category == spec["data"]["init_args"]["category"]


@pytest.mark.parametrize("config", CONFIGS, ids=[path.stem for path in CONFIGS])
def test_config_logs_metrics_to_a_csv_file(config, tmp_path):
    logger_spec = yaml.safe_load(config.read_text())["trainer"]["logger"]
    logger = build({**logger_spec, "init_args": {**logger_spec["init_args"], "save_dir": str(tmp_path)}})
    logger.log_metrics({"image_AUROC": 0.5}, step=0)
    logger.save()
    assert "image_AUROC" in (Path(logger.log_dir) / "metrics.csv").read_text()


BENCHMARK_CONFIGS = sorted((Path(__file__).resolve().parents[1] / "benchmarks" / "configs").glob("*.yaml"))


@pytest.mark.parametrize("config", BENCHMARK_CONFIGS, ids=[path.stem for path in BENCHMARK_CONFIGS])
def test_benchmark_config_names_real_models_arguments_and_data(config):
    """Every committed benchmark config (the README's commands) expands into jobs whose models take its arguments."""
    from anomalib_ssad.benchmark.runner import expand_jobs, load_config

    jobs = expand_jobs(load_config(config))
    assert jobs
    for job in jobs:
        module_name, _, class_name = job.model["class_path"].rpartition(".")
        model_class = getattr(importlib.import_module(module_name), class_name)
        parameters = inspect.signature(model_class.__init__).parameters
        unknown = set(job.model.get("init_args") or {}) - set(parameters)
        assert not unknown, f"{config.name}: {job.model['name']} does not take {sorted(unknown)}"
        root = job.dataset.get("init_args", {}).get("root")
        if root is not None and root.startswith("../shared/"):  # other roots are built by the benchmark script
            assert (config.parents[2] / root).is_dir(), f"{config.name}: no data at {root}"


@pytest.mark.skipif(not (SHARED_DATA / "kolektorsdd" / "kolektorsdd").is_dir(), reason="../shared/data not present")
def test_kolektorsdd_configs_square_input_warns_and_the_aspect_config_keeps_the_images_shape():
    """The square config squeezes KolektorSDD's portrait strips (the fit warns, naming 416x160); the aspect one not."""
    configs = Path(__file__).resolve().parents[1] / "configs" / "ssad"
    warnings = {}
    for name in ("kolektorsdd", "kolektorsdd_aspect"):
        spec = yaml.safe_load((configs / f"{name}.yaml").read_text())
        model = build(spec["model"])
        datamodule = build(
            {**spec["data"], "init_args": {**spec["data"]["init_args"], "root": SHARED_DATA / "kolektorsdd"}}
        )
        datamodule.setup("fit")
        warnings[name] = (
            resize_size(model.pre_processor.transform),
            input_aspect_warning(datamodule, model.pre_processor),
        )
    assert warnings["kolektorsdd"][0] == (256, 256)
    assert "squeezes their height" in warnings["kolektorsdd"][1] and "= [416, 160]" in warnings["kolektorsdd"][1]
    assert warnings["kolektorsdd_aspect"] == ((416, 160), None)
