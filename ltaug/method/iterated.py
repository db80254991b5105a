"""Iterated learning of the sparse latent space (student/teacher, decoder, classifier): the model and its phases.

Elberg, Parra, Petrache, *Long Tail Image Generation Through Feature Space Augmentation and
Iterated Learning* (arXiv 2405.01705), Sec. 3.1, after Ren et al. 2023 (iterated learning with
simplicial embeddings). Generations g = 1..G:

- imitation (g > 1): a freshly initialised student S_g imitates the teacher T = S_{g-1}. At
  every spatial position a one-hot target is drawn from the teacher's channel distribution,
  and the student's channel probabilities are fitted to it with binary cross-entropy (Eq. 2);
- interaction: S_g, the decoder D and the classifier C minimise
  lambda * L_R + (1 - lambda) * L_C (Eq. 5), with L_R the reconstruction error of D(S(z))
  against z (Eq. 3; MSE, or L1 as an option) and L_C the multi-label BCE of C(S(z)) (Eq. 4).

S_g then becomes the next teacher. D and C carry over from one generation to the next (the
student is the part that is re-learnt) unless ``reset_heads`` is set. Every generation draws
its initialisation, batch order and imitation targets from generators seeded by (seed, g), so
a run resumed from ``gen_{g}.pt`` ends with the weights of an uninterrupted run.

Two slips of the authors' code are not reproduced: the teacher's (B, C', h, w) output is
moved to (B, h, w, C') before it is flattened into one distribution per position (reshaping
it straight to (B*h*w, C') mixes channels and positions), and the two interaction losses are
weighted by lambda as Eq. 5 says (the code sums them).

Latents are streamed from the Zarr stores with a chunk-level shuffle buffer, so memory is
O(shuffle_buffer + batch), not O(data set). The stage that runs the generations, with its
checkpoints and resume, is ltaug.method.train_il.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from ltaug.common.config import THREADS, config_section
from ltaug.common.errors import ConfigError
from ltaug.common.metrics import group_map
from ltaug.common.precision import resolve_precision, training_autocast
from ltaug.common.sampling import balanced_indices
from ltaug.common.seeds import seed64, stream
from ltaug.data.classes import ClassSplit
from ltaug.method.networks import Decoder, SparseLatentModel, Student, build_classifier, min_latent_side


@config_section("il", extra={"threads": THREADS})
@dataclass(frozen=True)
class ILConfig:
    seed: int = 0  # seeds initialisation, batch order and imitation targets of every generation
    generations: int = 3  # G: number of generations (generation 1 has no imitation phase)
    imitation_epochs: int = 1  # epochs of the imitation phase (Eq. 2) of generations 2..G
    interaction_epochs: int = 4  # epochs of the interaction phase (Eq. 5) of every generation
    batch_size: int = 64  # latents per optimiser step
    lr: float = 2e-3  # AdamW learning rate (both phases)
    weight_decay: float = 1e-4  # AdamW weight decay
    lam: float = 0.5  # lambda of Eq. 5: lambda * L_R + (1 - lambda) * L_C
    recon_loss: str = "mse"  # L_R of Eq. 3: mse | l1
    pos_weight: bool = True  # weigh each class's positives by (negatives / positives) in L_C (training counts)
    pos_weight_max: float = 10.0  # upper bound of that weight (tail classes can have a handful of positives)
    balance: float = 0.0  # class balancing of interaction batches: 0 = image frequency, 1 = every class equally often
    embed_channels: int = 64  # C': channels of the simplicial embedding z^s
    temperature: float = 0.2  # softmax temperature of the simplicial embedding (Eq. 1)
    student_width: int = 16  # channels of the student U-Net's top level (doubled per level down)
    student_depth: int = 2  # down/up levels of the student U-Net (latent side divisible by 2**depth)
    decoder_width: int = 32  # channels of the decoder's conv blocks
    decoder_depth: int = 1  # conv blocks of the decoder
    classifier: str = "vgg"  # vgg (small VGG-style) | densenet121 (torchvision, first conv takes C' channels)
    classifier_width: int = 32  # vgg: channels of the first block (doubled per block, at most 4x)
    classifier_depth: int = 3  # vgg: conv blocks (2x2 max-pooling between blocks)
    classifier_stem: str = "small"  # densenet121: imagenet (7x7/2 conv + pool; latents >= 32) | small (3x3/1, no pool)
    reset_heads: bool = False  # re-initialise D and C at every generation (default: they carry over)
    shuffle_buffer: int = 4096  # samples shuffled together (whole Zarr chunks); memory is O(this)
    precision: str = "auto"  # auto | float32 | bfloat16: autocast of the training passes (ltaug.common.precision)
    threads: int = 2  # torch CPU threads

    def identity(self) -> dict:
        """The fields that decide the trained weights (threads do not)."""
        return {k: v for k, v in asdict(self).items() if k != "threads"}


# ---------------------------------------------------------------------------- building


STREAM_STUDENT, STREAM_HEADS, STREAM_IMITATION, STREAM_INTERACTION = range(1, 5)


def _seed(cfg: ILConfig, generation: int, part: int, *words: int) -> int:
    """The seed of one draw of ``generation``: (il.seed, stream("train_il"), generation, part, *words)."""
    return seed64(cfg.seed, stream("train_il"), generation, part, *words)


def build_student(cfg: ILConfig, in_channels: int, generation: int) -> Student:
    """A freshly initialised student for ``generation`` (its own seed)."""
    torch.manual_seed(_seed(cfg, generation, STREAM_STUDENT))
    return Student(in_channels, cfg.embed_channels, cfg.student_width, cfg.student_depth, cfg.temperature)


def build_heads(cfg: ILConfig, in_channels: int, num_classes: int, generation: int) -> tuple[Decoder, nn.Module]:
    """Freshly initialised decoder D and classifier C (seeded by ``generation``)."""
    torch.manual_seed(_seed(cfg, generation, STREAM_HEADS))
    decoder = Decoder(cfg.embed_channels, in_channels, cfg.decoder_width, cfg.decoder_depth)
    classifier = build_classifier(
        cfg.classifier, cfg.embed_channels, num_classes, cfg.classifier_width, cfg.classifier_depth, cfg.classifier_stem
    )
    return decoder, classifier


def build_model(cfg: ILConfig, latent_shape: tuple[int, int, int], num_classes: int) -> SparseLatentModel:
    """S, D, C for latents of shape (C, h, w), as generation 1 initialises them."""
    c, h, w = latent_shape
    side = min_latent_side(cfg.classifier, cfg.classifier_depth, cfg.classifier_stem)
    if min(h, w) < side or h % 2**cfg.student_depth or w % 2**cfg.student_depth:
        raise ConfigError(
            f"il: latents of spatial size {h} x {w} do not fit the networks: the student needs sides divisible by "
            f"2**il.student_depth = {2**cfg.student_depth} and il.classifier={cfg.classifier} (stem "
            f"{cfg.classifier_stem}, depth {cfg.classifier_depth}) needs sides of at least {side}; lower "
            f"il.student_depth / il.classifier_depth, use il.classifier_stem: small, or a larger latents.image_size."
        )
    decoder, classifier = build_heads(cfg, c, num_classes, 1)
    return SparseLatentModel(build_student(cfg, c, 1), decoder, classifier)


# ---------------------------------------------------------------------------- the losses


def sample_one_hot(probs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """(B, C', h, w) channel distributions -> (B, C', h, w) one-hot targets, one draw per position.

    The channel axis is moved last before flattening, so each row of the (B*h*w, C') matrix
    is the distribution of one position (a straight reshape would mix channels and positions).
    """
    b, c, h, w = probs.shape
    rows = probs.permute(0, 2, 3, 1).reshape(-1, c)  # (B*h*w, C'), one position per row
    index = torch.multinomial(rows, 1, generator=generator).squeeze(1)  # (B*h*w,)
    onehot = F.one_hot(index, c).to(probs.dtype)  # (B*h*w, C')
    return onehot.reshape(b, h, w, c).permute(0, 3, 1, 2)  # (B, C', h, w)


def imitation_loss(student_probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Eq. 2: binary cross-entropy between the student's channel probabilities and the one-hot targets,
    averaged over batch, channels and positions."""
    return F.binary_cross_entropy(student_probs, targets)


def interaction_losses(
    model: SparseLatentModel, z: torch.Tensor, y: torch.Tensor, cfg: ILConfig, pos_weight: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, L_R, L_C) of Eq. 5 for latents z (B, C, h, w) and 0/1 labels y (B, K).

    L_R (Eq. 3): MSE (or L1) between D(S(z)) and z; L_C (Eq. 4): BCE with logits of C(S(z)),
    positives weighted by ``pos_weight`` (K,) when given; loss = lam * L_R + (1 - lam) * L_C.
    """
    zs, recon, logits = model(z)
    recon, logits = recon.float(), logits.float()  # the losses in float32, also under autocast (il.precision)
    l_r = F.mse_loss(recon, z) if cfg.recon_loss == "mse" else F.l1_loss(recon, z)
    l_c = F.binary_cross_entropy_with_logits(logits, y.to(logits.dtype), pos_weight=pos_weight)
    return cfg.lam * l_r + (1.0 - cfg.lam) * l_c, l_r, l_c


def class_pos_weight(labels_sum: np.ndarray, n: int, cap: float) -> torch.Tensor:
    """(K,) weight of each class's positives: negatives / positives, in [1, cap] (cap for a class without positives)."""
    pos = np.asarray(labels_sum, dtype=np.float64)
    weight = np.where(pos > 0, (n - pos) / np.maximum(pos, 1), cap)
    return torch.tensor(np.clip(weight, 1.0, cap), dtype=torch.float32)


# ---------------------------------------------------------------------------- streaming the latents


class LatentStream:
    """Batches of (z, labels) from a latent store, in shuffled chunk groups (memory O(buffer))."""

    def __init__(self, group, batch_size: int, buffer: int):
        self.z, self.labels = group["z"], group["labels"]
        self.n, self.chunk = self.z.shape[0], self.z.chunks[0]
        self.batch_size = batch_size
        self.chunks_per_buffer = max(1, buffer // self.chunk)

    def _rows(self, chunk_index: int) -> tuple[np.ndarray, np.ndarray]:
        sl = slice(chunk_index * self.chunk, min((chunk_index + 1) * self.chunk, self.n))
        return self.z[sl], self.labels[sl]

    def shuffled(self, generator: torch.Generator, balance: float = 0.0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Chunks in a random order, ``chunks_per_buffer`` at a time, rows shuffled within the buffer.

        ``balance`` > 0 draws as many rows as the buffer holds class-balanced instead
        (:func:`ltaug.common.sampling.balanced_indices`, with replacement): an epoch keeps its length,
        tail samples are repeated and head samples left out, still in O(buffer) memory.
        """
        n_chunks = math.ceil(self.n / self.chunk)
        order = torch.randperm(n_chunks, generator=generator).tolist()
        for start in range(0, n_chunks, self.chunks_per_buffer):
            parts = [self._rows(c) for c in order[start : start + self.chunks_per_buffer]]
            z = torch.from_numpy(np.concatenate([p[0] for p in parts]))
            y = torch.from_numpy(np.concatenate([p[1] for p in parts]))
            if balance > 0:
                perm = balanced_indices(y.numpy(), len(z), balance, generator)
            else:
                perm = torch.randperm(len(z), generator=generator)
            for b in range(0, len(z), self.batch_size):
                index = perm[b : b + self.batch_size]
                yield z[index], y[index]

    def ordered(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for c in range(math.ceil(self.n / self.chunk)):
            z, y = self._rows(c)
            for b in range(0, len(z), self.batch_size):
                yield torch.from_numpy(z[b : b + self.batch_size]), torch.from_numpy(y[b : b + self.batch_size])


# ---------------------------------------------------------------------------- phases


@torch.no_grad()
def evaluate(model: SparseLatentModel, stream: LatentStream, split: ClassSplit, device: torch.device) -> dict:
    """Validation reconstruction MSE, head/tail/all mAP of C, and sparsity (mean largest channel probability)."""
    model.eval()
    sq_err, elements, top, positions = 0.0, 0, 0.0, 0
    labels, scores = [], []
    for z, y in stream.ordered():
        z = z.to(device)
        zs, recon, logits = model(z)
        sq_err += float(((recon - z) ** 2).sum())
        elements += z.numel()
        top += float(zs.max(dim=1).values.sum())
        positions += zs.shape[0] * zs.shape[2] * zs.shape[3]
        labels.append(y.numpy())
        scores.append(torch.sigmoid(logits).cpu().numpy())
    maps = group_map(np.concatenate(labels), np.concatenate(scores), split.classes, split.head, split.tail)
    return {
        "val_recon_mse": sq_err / elements,
        "val_map_head": maps["map_head"],
        "val_map_tail": maps["map_tail"],
        "val_map_all": maps["map_all"],
        "val_sparsity": top / positions,
    }


def _optimizer(params, cfg: ILConfig) -> torch.optim.AdamW:
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def _generator(device: torch.device, seed: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def autocast(cfg: ILConfig, device: torch.device) -> torch.autocast:
    """bfloat16 autocast of a training pass when ``cfg.precision`` resolves to it on ``device``, else a no-op."""
    return training_autocast(resolve_precision(cfg.precision, device, "il.precision"), device)


def imitation_phase(
    teacher: Student, student: Student, train: LatentStream, cfg: ILConfig, generation: int, device: torch.device
) -> Iterator[dict]:
    """Eq. 2 for ``cfg.imitation_epochs`` epochs; yields each epoch's training means."""
    teacher.eval().requires_grad_(False)
    opt = _optimizer(student.parameters(), cfg)
    data_gen = torch.Generator().manual_seed(_seed(cfg, generation, STREAM_IMITATION))
    target_gen = _generator(device, _seed(cfg, generation, STREAM_IMITATION, 1))
    for epoch in range(cfg.imitation_epochs):
        student.train()  # validation after each epoch leaves it in eval mode
        total, count, start = 0.0, 0, time.perf_counter()
        bar = tqdm(total=train.n, desc=f"gen {generation} imitation {epoch + 1}/{cfg.imitation_epochs}",
                   unit="z", file=sys.stderr, mininterval=5.0, leave=False)  # fmt: skip
        for z, _ in train.shuffled(data_gen):
            z = z.to(device)
            with torch.no_grad():
                targets = sample_one_hot(teacher(z), target_gen)  # (B, C', h, w) one-hot per position
            with autocast(cfg, device):
                probs = student(z)
            loss = imitation_loss(probs.float(), targets)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total, count = total + loss.item() * len(z), count + len(z)
            bar.update(len(z))
        bar.close()
        seconds = time.perf_counter() - start
        yield {"epoch": epoch + 1, "train_loss": total / count, "train_imitation_bce": total / count,
               "samples_per_s": count / seconds, "seconds": seconds}  # fmt: skip


def interaction_phase(
    model: SparseLatentModel,
    train: LatentStream,
    cfg: ILConfig,
    pos_weight: torch.Tensor | None,
    generation: int,
    device: torch.device,
) -> Iterator[dict]:
    """Eq. 5 on S, D and C for ``cfg.interaction_epochs`` epochs; yields each epoch's training means."""
    opt = _optimizer(model.parameters(), cfg)
    data_gen = torch.Generator().manual_seed(_seed(cfg, generation, STREAM_INTERACTION))
    for epoch in range(cfg.interaction_epochs):
        model.train()  # validation after each epoch leaves it in eval mode
        sums, count, start = np.zeros(3), 0, time.perf_counter()
        bar = tqdm(total=train.n, desc=f"gen {generation} interaction {epoch + 1}/{cfg.interaction_epochs}",
                   unit="z", file=sys.stderr, mininterval=5.0, leave=False)  # fmt: skip
        for z, y in train.shuffled(data_gen, cfg.balance):
            with autocast(cfg, device):
                loss, l_r, l_c = interaction_losses(model, z.to(device), y.to(device), cfg, pos_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sums += np.array([loss.item(), l_r.item(), l_c.item()]) * len(z)
            count += len(z)
            bar.update(len(z))
        bar.close()
        seconds = time.perf_counter() - start
        mean = sums / count
        yield {"epoch": epoch + 1, "train_loss": mean[0], "train_recon": mean[1], "train_cls_bce": mean[2],
               "samples_per_s": count / seconds, "seconds": seconds}  # fmt: skip

