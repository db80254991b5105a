"""Iterated learning on tiny synthetic latents: the class split, a small ILConfig, the latent stores and a trained run the IL tests share."""

from __future__ import annotations


import torch

from ltaug.data.classes import ClassSplit
from ltaug.method.iterated import ILConfig


CLASSES = ["Cardiomegaly", "Pleural Effusion", "Nodule", "Fracture"]


PREVALENCE = [0.4, 0.3, 0.1, 0.06]


SPLIT = ClassSplit(
    classes=CLASSES, head=CLASSES[:2], tail=CLASSES[2:], medium=[],
    train_counts={}, prevalence=dict(zip(CLASSES, PREVALENCE)), n={"train": 256, "val": 96, "test": 0},
)  # fmt: skip


TINY = ILConfig(
    generations=2, imitation_epochs=1, interaction_epochs=6, batch_size=16, lr=3e-3, embed_channels=16,
    student_width=8, student_depth=1, decoder_width=16, decoder_depth=1, classifier_width=8, classifier_depth=2,
    threads=1, precision="float32",  # the same numbers on every CPU, whatever auto would pick
)  # fmt: skip


CPU = torch.device("cpu")


def state(model) -> dict[str, torch.Tensor]:
    return {f"{part}.{k}": v for part in ("student", "decoder", "classifier")
            for k, v in getattr(model, part).state_dict().items()}  # fmt: skip


def assert_same_weights(a, b) -> None:
    sa, sb = state(a), state(b)
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key
