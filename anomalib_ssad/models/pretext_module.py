# Copyright (C) 2026 anomalib-ssad developers
# SPDX-License-Identifier: Apache-2.0

"""Lightning base shared by SSAD and CutPaste: synthetic-anomaly pretext training and a fitted normal model.

Training draws synthetic anomalies on the fly with ``self.generator`` (a
:class:`~anomalib_ssad.components.synthetic.SyntheticAnomalyGenerator`) on the training batch as the
:class:`~anomalib_ssad.components.PretextPreProcessor` leaves it (resized, not yet normalised), repeated so
that an epoch sees about
``samples_per_epoch`` samples, and trains ``self.model`` (a
:class:`~anomalib_ssad.components.pretext_network.PretextNetwork`) with cross-entropy in two stages: backbone
frozen (``warmup_epochs``), then everything (``finetune_epochs``), each with its own cosine schedule. Before
every validation the network's scorer (memory bank, Gaussian, ...) is fitted on clean training images
(:meth:`PretextAnomalyModule.fit_normal_model`); a scorer that learns during training (the paper's ``"train"``
memory bank) observes every pretext step instead.

Example:
    >>> from anomalib_ssad import CutPaste, SSAD
    >>> from anomalib_ssad.models.pretext_module import PretextAnomalyModule
    >>> issubclass(SSAD, PretextAnomalyModule) and issubclass(CutPaste, PretextAnomalyModule)
    True
"""

import math
from collections.abc import Callable
from typing import Any, Literal

import torch
from anomalib.data import Batch
from anomalib.metrics import Evaluator
from anomalib.visualization import Visualizer
from lightning.pytorch.utilities.types import STEP_OUTPUT
from torch import nn
from torch.nn import functional as F  # noqa: N812

from anomalib_ssad.components import PretextPreProcessor, cell_labels
from anomalib_ssad.components.pretext_network import PretextNetwork
from anomalib_ssad.components.synthetic import SyntheticAnomalyGenerator
from anomalib_ssad.validation import check_choice, check_non_negative, check_positive

from .base import PluginAnomalyModule

__all__ = ["Optimizer", "PretextAnomalyModule", "balanced_cross_entropy"]

# Dense pretext task: normal cells drawn per image and step (every defective cell is used).
NORMAL_CELLS_PER_IMAGE = 64

Optimizer = Literal["sgd", "adam"]


class PretextAnomalyModule(PluginAnomalyModule):
    """Pretext-task training loop, two-stage schedule and evaluation wiring; subclasses set the model.

    Subclasses set ``self.model`` (a network given its scorer) and ``self.generator`` after calling this
    constructor. The classifier's targets are the positions of the generator's labels in its ``spec.classes`` (a
    binary CutPaste variant: normal vs its one defect kind).

    Args:
        warmup_epochs: Stage 1 epochs (backbone frozen, only heads train).
        finetune_epochs: Stage 2 epochs (whole network trains).
        warmup_lr: Stage 1 learning rate (cosine-annealed within the stage).
        finetune_lr: Stage 2 learning rate (cosine-annealed within the stage).
        momentum: SGD momentum (ignored by Adam).
        weight_decay: Weight decay.
        optimizer: ``"sgd"`` or ``"adam"``.
        samples_per_epoch: Each training image is used ``ceil(samples_per_epoch / num_train_images)`` times
            per epoch (the loader's batch is expanded by the repeats, then split).
        batch_size: Pretext samples per optimizer step.
        draws_per_repeat: Pretext samples drawn per image and repeat (e.g. several crops in patch mode).
        freeze_batchnorm: Keep the backbone's BatchNorm statistics during stage 2 (its weights still train).
        seed: Seed of everything the model draws: the network's initialisation (build it under
            :func:`seeded`), synthetic anomalies, bank subsets, and, from the start of fitting, the process's
            generators (so the training loader's order repeats too; Lightning's ``seed_everything``).
        pre_processor: Pre-processor (``True``: resize to 256 px and ImageNet normalisation); an anomalib
            ``PreProcessor`` becomes a :class:`~anomalib_ssad.components.PretextPreProcessor` with its transform.
        post_processor: Post-processor (``True``: anomalib's default).
        evaluator: Evaluator (``True``: image AUROC/F1, pixel AUROC/AUPRO).
        visualizer: Visualizer (``True``: anomalib's default).

    Raises:
        ValueError: For negative epochs, no epoch at all, an unknown optimizer or a value out of range (the
            message names the argument).
    """

    model: PretextNetwork
    generator: SyntheticAnomalyGenerator

    def __init__(
        self,
        warmup_epochs: int,
        finetune_epochs: int,
        warmup_lr: float,
        finetune_lr: float,
        momentum: float,
        weight_decay: float,
        optimizer: Optimizer,
        samples_per_epoch: int,
        batch_size: int,
        draws_per_repeat: int,
        freeze_batchnorm: bool,
        seed: int,
        pre_processor: nn.Module | bool = True,
        post_processor: nn.Module | bool = True,
        evaluator: Evaluator | bool = True,
        visualizer: Visualizer | bool = True,
    ) -> None:
        super().__init__(
            seed=seed,
            pre_processor=pre_processor,
            post_processor=post_processor,
            evaluator=evaluator,
            visualizer=visualizer,
        )
        if warmup_epochs < 0 or finetune_epochs < 0 or warmup_epochs + finetune_epochs == 0:
            msg = f"Need warmup_epochs, finetune_epochs >= 0 and >= 1 epoch; got {warmup_epochs}, {finetune_epochs}."
            raise ValueError(msg)
        check_choice("optimizer", optimizer, Optimizer)
        check_positive(
            warmup_lr=warmup_lr,
            finetune_lr=finetune_lr,
            samples_per_epoch=samples_per_epoch,
            batch_size=batch_size,
            draws_per_repeat=draws_per_repeat,
        )
        check_non_negative(weight_decay=weight_decay)
        if not 0 <= momentum < 1:
            msg = f"momentum must lie in [0, 1), got {momentum!r}."
            raise ValueError(msg)
        self.warmup_epochs = warmup_epochs
        self.finetune_epochs = finetune_epochs
        self.warmup_lr = warmup_lr
        self.finetune_lr = finetune_lr
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.optimizer_name = optimizer
        self.samples_per_epoch = samples_per_epoch
        self.batch_size = batch_size
        self.draws_per_repeat = draws_per_repeat
        self.freeze_batchnorm = freeze_batchnorm
        # Several optimizer steps per loader batch (see training_step).
        self.automatic_optimization = False
        self._torch_rng = torch.Generator().manual_seed(seed)
        self._repeats = 1
        self._trained_backbone: list[nn.Parameter] = []
        # Synthetic anomalies are drawn on training batches before normalisation.
        self.pre_processor = PretextPreProcessor.wrap(self.pre_processor)

    def fit_normal_model(self, dataloader: torch.utils.data.DataLoader | None = None) -> None:
        """Fit the scorer on eval-mode embeddings of clean images (called before every validation while fitting).

        A scorer that uses a bounded number of rows (the dense cells' ``max_fit_rows``) gets a uniform random
        subset of that many, collected batch by batch. A scorer that learns during training is left as it is; the
        network's ``image_scorer``, if any, is fitted either way.

        Args:
            dataloader: Clean (normal) images; the datamodule's training images when ``None``.
        """
        scorer = self.model.scorer
        generator = torch.Generator().manual_seed(self.seed)
        dataloader = self._train_dataloader() if dataloader is None else dataloader
        if not scorer.learns_in_training:
            max_rows = getattr(scorer, "max_fit_rows", None)
            embeddings = self.collect_normal_embeddings(dataloader, max_rows=max_rows, generator=generator)
            for embedding in embeddings:
                self._check_finite(embedding, "normal embeddings")
            scorer.fit(embeddings, generator)
        if self.model.image_scorer is not None:
            features = self.collect_normal_embeddings(
                dataloader, embed=lambda images: [self.model.image_features(images)]
            )
            self._check_finite(features[0], "normal image features")
            self.model.image_scorer.fit(features, generator)

    @property
    def max_epochs(self) -> int:
        """Length of the two-stage schedule."""
        return self.warmup_epochs + self.finetune_epochs

    def on_fit_start(self) -> None:
        """Seed, align the epochs and check the images (see the base), then size the repeats."""
        super().on_fit_start()
        # Under DDP every process draws its own synthetic anomalies (rank 0 draws what one process would).
        self._torch_rng = torch.Generator().manual_seed(self.rank_seed())
        num_images = len(self._train_dataloader().dataset)
        self._repeats = max(1, math.ceil(self.samples_per_epoch / max(num_images, 1)))

    def _train_dataloader(self) -> torch.utils.data.DataLoader:
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is None:
            msg = f"{type(self).__name__} needs a datamodule (e.g. anomalib.data.MVTecAD or Folder) to fit its scorer."
            raise RuntimeError(msg)
        return datamodule.train_dataloader()

    def setup(self, stage: str) -> None:
        """Before Lightning wraps the model (DDP), stop gradients of backbone parameters that never train.

        Without fine-tuning that is the whole backbone; in ``"dense"`` mode also the stage it does not score.
        The parameters left are the ones stage 2 trains.
        """
        if stage != "fit":
            return
        if self.finetune_epochs == 0:
            self.model.backbone.requires_grad_(False)
        else:
            self.model.freeze_unused_backbone()
        self._trained_backbone = [
            parameter for parameter in self.model.backbone.parameters() if parameter.requires_grad
        ]

    def on_train_epoch_start(self) -> None:
        """Stage 1 freezes the backbone (weights and BatchNorm statistics); stage 2 trains its weights too.

        With ``freeze_batchnorm`` the backbone stays in eval mode in stage 2: pretext batches (32 px crops, or
        images with synthetic defects) would otherwise pull the BatchNorm statistics away from those of the
        clean whole images the scorer sees, which cost 0.08 pixel AUROC on MVTec bottle (see README).
        Under DDP the parameters that train may not change once the model is wrapped, so stage 1 keeps the
        backbone's gradients and freezes it through its zero learning rate.
        """
        frozen = self.current_epoch < self.warmup_epochs
        if self.trainer.world_size == 1:
            for parameter in self._trained_backbone:
                parameter.requires_grad_(not frozen)
        self.model.backbone.train(not frozen and not self.freeze_batchnorm)

    def configure_optimizers(self) -> dict[str, Any]:
        """SGD (or Adam) with one cosine schedule per stage; the backbone's learning rate is 0 during stage 1."""
        backbone_params = list(self.model.backbone.parameters())
        backbone_ids = {id(param) for param in backbone_params}
        head_params = [param for param in self.model.parameters() if id(param) not in backbone_ids]
        groups = [{"params": head_params}, {"params": backbone_params}]
        # lr=1: the schedule below returns absolute learning rates.
        if self.optimizer_name == "adam":
            optimizer: torch.optim.Optimizer = torch.optim.Adam(groups, lr=1.0, weight_decay=self.weight_decay)
        else:
            optimizer = torch.optim.SGD(groups, lr=1.0, momentum=self.momentum, weight_decay=self.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lr_lambda=[self._learning_rate(backbone=False), self._learning_rate(backbone=True)]
        )
        return {"optimizer": optimizer, "lr_scheduler": scheduler}

    def _learning_rate(self, backbone: bool) -> Callable[[int], float]:
        def schedule(epoch: int) -> float:
            if epoch < self.warmup_epochs:
                return 0.0 if backbone else _cosine(self.warmup_lr, epoch, self.warmup_epochs)
            return _cosine(self.finetune_lr, epoch - self.warmup_epochs, self.finetune_epochs)

        return schedule

    def _targets(self, labels: torch.Tensor) -> torch.Tensor:
        """Classifier targets: each label's position in the generator's ``spec.classes``."""
        lookup = torch.zeros(3, dtype=torch.long, device=labels.device)
        lookup[list(self.generator.spec.classes)] = torch.arange(len(self.generator.spec.classes), device=labels.device)
        return lookup[labels]

    def training_step(self, batch: Batch, *args: Any, **kwargs: Any) -> STEP_OUTPUT:
        """Draw synthetic anomalies for every repeat of the batch and take one optimizer step per ``batch_size``.

        Repeating the loader's batch ``ceil(samples_per_epoch / num_train_images)`` times is the reference's
        repeated file list; splitting the pool into ``batch_size`` steps keeps memory bounded.
        """
        del args, kwargs
        # One draw per repeat (rather than one draw on a repeated batch) keeps every image's cut-paste
        # source a *different* image of the batch.
        draws = [
            self.generator(batch.image, generator=self._torch_rng) for _ in range(self._repeats * self.draws_per_repeat)
        ]
        pool = torch.cat([draw[0] for draw in draws])
        pool = self.pre_processor.normalize(pool) if isinstance(self.pre_processor, PretextPreProcessor) else pool
        pool_labels = self._targets(torch.cat([draw[1] for draw in draws]))
        pool_masks = torch.cat([draw[2] for draw in draws])
        order = torch.randperm(len(pool_labels), generator=self._torch_rng).to(pool.device)
        optimizer = self.optimizers()
        losses = []
        for step in order.split(self.batch_size):
            if self.model.localization == "dense":
                embeddings, logits, labels = self._dense_pretext_step(pool[step], pool_masks[step], pool_labels[step])
                loss = balanced_cross_entropy(logits, labels, self.model.classifier.out_features)
            else:
                embeddings, logits = self.model(pool[step])
                labels = pool_labels[step]
                loss = F.cross_entropy(logits, labels)
            self._check_finite(loss, "the pretext loss")
            optimizer.zero_grad()
            self.manual_backward(loss)
            optimizer.step()
            losses.append(loss.detach())
            self.model.scorer.observe(embeddings, logits, labels)
            accuracy = (logits.argmax(1) == labels).float().mean()
            self.log("train_accuracy", accuracy, on_epoch=True, on_step=False, batch_size=len(labels))
        loss = torch.stack(losses).mean()
        self.log("train_loss", loss, on_epoch=True, prog_bar=True, batch_size=len(pool_labels))
        return loss

    def _check_finite(self, values: torch.Tensor, name: str) -> None:
        """Stop fitting when ``values`` are not all finite: diverged weights would give NaN scores, not an error.

        The message is built only on failure (this runs on every training step).

        Args:
            values: The pretext loss (a scalar) or normal embeddings (rows).
            name: What they are, for the message (``"the pretext loss"``, ``"normal embeddings"``).
        """
        if torch.isfinite(values).all():
            return
        if values.ndim == 0:
            what = f"{name} is {values.item()}"
        else:
            bad = int((~torch.isfinite(values).all(dim=-1)).sum())
            what = f"{bad} of {len(values)} {name} are not finite"
        warmup = self.current_epoch < self.warmup_epochs
        stage, lr = ("warmup", self.warmup_lr) if warmup else ("finetune", self.finetune_lr)
        msg = (
            f"{type(self).__name__}: {what} in epoch {self.current_epoch}: training diverged. Lower {stage}_lr "
            f"(now {lr})."
        )
        raise FloatingPointError(msg)

    def _dense_pretext_step(
        self, images: torch.Tensor, masks: torch.Tensor, labels: torch.Tensor
    ) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """Embeddings, logits and labels of the cells one dense pretext step trains on.

        Every cell is a sample, labelled from the exact defect mask (:func:`cell_labels`); all defective cells
        are kept and ``NORMAL_CELLS_PER_IMAGE`` normal cells per image are drawn at random, so the head runs on
        a few thousand cells per step instead of every cell of every image.
        """
        features = self.model.cell_features(images)
        targets = cell_labels(masks, labels, features.shape[1:3])
        normal = targets == 0
        draw = torch.rand(normal.shape, generator=self._torch_rng, device="cpu").to(normal.device)
        # Rank each image's normal cells by a random key; keep the lowest NORMAL_CELLS_PER_IMAGE.
        keys = torch.where(normal, draw, torch.full_like(draw, 2.0)).flatten(1)
        kept_normal = torch.zeros_like(normal.flatten(1))
        quota = min(NORMAL_CELLS_PER_IMAGE, keys.shape[1])
        kept_normal.scatter_(1, keys.topk(quota, dim=1, largest=False).indices, value=True)
        keep = (targets > 0) | (kept_normal.view_as(normal) & normal)
        embedding = self.model.cell_embeddings(features[keep])
        return [embedding], self.model.classifier(embedding), targets[keep]

    def on_train_epoch_end(self) -> None:
        """Step the learning-rate schedule; the scorer settles what it observed (all processes' rows)."""
        self.lr_schedulers().step()
        self.model.scorer.end_epoch(self.gather_rows)

    def on_validation_epoch_start(self) -> None:
        """Refit the normal model with the current weights, so validation and test see the same scorer."""
        if self.trainer.state.fn == "fit":
            self.fit_normal_model()

    @torch.no_grad()
    def collect_normal_embeddings(
        self,
        dataloader: torch.utils.data.DataLoader,
        max_rows: int | None = None,
        generator: torch.Generator | None = None,
        embed: Callable[[torch.Tensor], list[torch.Tensor]] | None = None,
    ) -> list[torch.Tensor]:
        """Eval-mode embeddings of the clean images of ``dataloader``, ``[N, D]`` per head.

        The images are read in dataset order (a shuffling loader's order is not used), so the same network and
        ``generator`` seed give the same rows. Under DDP each process embeds its share of the images (every
        ``world_size``-th) and the shares are gathered, so every process fits the same normal model from all images.

        Args:
            dataloader: Clean (normal) images.
            max_rows: Keep about this many rows in all, a uniform random subset of every image's rows drawn
                batch by batch, so memory stays bounded however many images there are (``None``: keep all).
            generator: Random generator of that subset.
            embed: What to collect of a batch of pre-processed images, rows per output (``None``: the network's
                ``normal_embeddings``, one output per head).
        """
        embed = self.model.normal_embeddings if embed is None else embed
        was_training = self.model.training
        self.model.eval()
        shard = self._shard(dataloader)
        num_images = len(shard.dataset)
        collected: list[list[torch.Tensor]] = []
        for batch in shard:
            images = batch.image.to(self.device)
            images = self.pre_processor(images) if self.pre_processor else images
            embeddings = embed(images)
            collected = collected or [[] for _ in embeddings]
            if max_rows is not None:
                # Every image has the same number of rows: keep this batch's share of max_rows.
                rows_per_image = embeddings[0].shape[0] // len(images)
                fraction = max_rows / max(self._world_size() * num_images * rows_per_image, 1)
                if fraction < 1:
                    keep = torch.randperm(embeddings[0].shape[0], generator=generator)
                    keep = keep[: math.ceil(fraction * len(keep))].sort().values.to(images.device)
                    embeddings = [embedding[keep] for embedding in embeddings]
            for store, embedding in zip(collected, embeddings, strict=True):
                store.append(embedding)
        self.model.train(was_training)
        return [self.gather_rows(torch.cat(store)) for store in collected]

    def _world_size(self) -> int:
        trainer = self._trainer
        return trainer.world_size if trainer is not None else 1

    def _shard(self, dataloader: torch.utils.data.DataLoader) -> torch.utils.data.DataLoader:
        """This process's share of ``dataloader``'s images (all of them in a single process), in dataset order.

        A training loader shuffles: in its order, the random rows kept of each batch and the scorer's random
        hold-out would depend on the global random state, so refitting the same network would give another scorer.
        """
        world_size = self._world_size()
        dataset = dataloader.dataset
        rank = self.trainer.global_rank if world_size > 1 else 0
        share = torch.utils.data.Subset(dataset, range(rank, len(dataset), world_size))
        return torch.utils.data.DataLoader(
            share,
            batch_size=dataloader.batch_size,
            shuffle=False,
            num_workers=dataloader.num_workers,
            collate_fn=dataloader.collate_fn,
        )

    def gather_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """Rows ``[N_rank, D]`` of every process, concatenated in rank order (``rows`` in a single process)."""
        world_size = self._world_size()
        if world_size == 1:
            return rows
        counts = self.all_gather(torch.tensor(rows.shape[0], device=rows.device)).flatten().tolist()
        padded = rows.new_zeros(max(counts), *rows.shape[1:])
        padded[: rows.shape[0]] = rows
        gathered = self.all_gather(padded)
        return torch.cat([gathered[rank, :count] for rank, count in enumerate(counts)])


def balanced_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Cross-entropy in which every class present weighs the same, however many samples it has.

    Defective cells are a few percent of an image's cells (and scars far fewer than big defects): unweighted,
    the classifier would learn to call every cell normal.
    """
    counts = torch.bincount(labels, minlength=num_classes).float()
    weights = torch.where(counts > 0, 1.0 / counts.clamp_min(1.0), torch.zeros_like(counts))
    losses = F.cross_entropy(logits, labels, reduction="none")
    sample_weights = weights[labels]
    return (losses * sample_weights).sum() / sample_weights.sum().clamp_min(1e-12)


def _cosine(base_lr: float, epoch: int, num_epochs: int) -> float:
    """Cosine annealing from ``base_lr`` towards 0 over ``num_epochs``."""
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * epoch / max(num_epochs, 1)))
