"""The iterated-learning networks: student S (simplicial embedding), decoder D, classifier C.

Elberg, Parra, Petrache, *Long Tail Image Generation Through Feature Space Augmentation and
Iterated Learning* (arXiv 2405.01705), Sec. 3.1:

- S maps a Stable Diffusion latent z (B, C, h, w) to z^s = S(z) (B, C', h, w) with C' > C and a
  softmax over the C' channels at every spatial position: the simplicial embedding of Eq. 1
  (Lavoie et al. 2023), so every position of z^s is a point on the (C'-1)-simplex;
- D maps z^s back to z (Eq. 3 is its reconstruction loss); SD latents are not confined to
  [-1, 1], so its output is unconstrained (no tanh);
- C is a multi-label classifier on z^s (Eq. 4), whose CAM maps (Sec. 3.2) tell which
  positions carry a class. Its architecture is torchvision's DenseNet121 with a first
  convolution taking C' channels (no pre-trained weights), or a small VGG-style network.

Every network is a plain ``nn.Module`` in float32; device placement is the caller's.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

ARCHITECTURES = ("vgg", "densenet121")
STEMS = ("imagenet", "small")


def _norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 8 groups that divide ``channels`` (batch-independent, unlike BatchNorm)."""
    groups = next(g for g in (8, 4, 2, 1) if channels % g == 0)
    return nn.GroupNorm(groups, channels)


class ConvBlock(nn.Sequential):
    """(conv3x3 -> GroupNorm -> SiLU) x 2."""

    def __init__(self, cin: int, cout: int):
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=1), _norm(cout), nn.SiLU(),
            nn.Conv2d(cout, cout, 3, padding=1), _norm(cout), nn.SiLU(),
        )  # fmt: skip


class Student(nn.Module):
    """S: z (B, C, h, w) -> z^s (B, C', h, w), a U-Net with a channel softmax at every position (Eq. 1).

    ``depth`` down/up levels (h and w must be divisible by 2**depth), ``width`` channels at
    the top level, doubled at each level down. :meth:`logits` gives the pre-softmax scores;
    ``forward`` the simplicial embedding softmax(logits / temperature) over channels.
    """

    def __init__(self, in_channels: int, embed_channels: int, width: int, depth: int, temperature: float = 1.0):
        super().__init__()
        self.depth, self.temperature = depth, temperature
        widths = [width * 2**i for i in range(depth + 1)]
        self.stem = ConvBlock(in_channels, widths[0])
        self.down = nn.ModuleList(nn.Conv2d(widths[i], widths[i + 1], 3, stride=2, padding=1) for i in range(depth))
        self.down_blocks = nn.ModuleList(ConvBlock(widths[i + 1], widths[i + 1]) for i in range(depth))
        self.up = nn.ModuleList(nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2) for i in range(depth))
        self.up_blocks = nn.ModuleList(ConvBlock(2 * widths[i], widths[i]) for i in range(depth))
        self.head = nn.Conv2d(widths[0], embed_channels, 1)

    def logits(self, z: torch.Tensor) -> torch.Tensor:
        if z.shape[-1] % 2**self.depth or z.shape[-2] % 2**self.depth:
            raise ValueError(
                f"latents of spatial size {tuple(z.shape[-2:])} are not divisible by 2**depth = {2**self.depth}; "
                f"lower il.student_depth or use an image size whose latent side is a multiple of {2**self.depth}"
            )
        x = self.stem(z)  # (B, w, h, w)
        skips = []
        for down, block in zip(self.down, self.down_blocks):
            skips.append(x)
            x = block(down(x))  # (B, 2^i w, h / 2^i, w / 2^i)
        for up, block in zip(reversed(self.up), reversed(self.up_blocks)):
            x = block(torch.cat([up(x), skips.pop()], dim=1))
        return self.head(x)  # (B, C', h, w)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return F.softmax(self.logits(z) / self.temperature, dim=1)  # Eq. 1: (B, C', h, w), sums to 1 over C'


class Decoder(nn.Module):
    """D: z^s (B, C', h, w) -> z (B, C, h, w), ``depth`` conv blocks of ``width`` channels, linear output."""

    def __init__(self, embed_channels: int, out_channels: int, width: int, depth: int):
        super().__init__()
        blocks = [ConvBlock(embed_channels if i == 0 else width, width) for i in range(depth)]
        self.body = nn.Sequential(*blocks)
        self.out = nn.Conv2d(width, out_channels, 3, padding=1)  # unconstrained range: SD latents are not in [-1, 1]

    def forward(self, zs: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(zs))


class VGGClassifier(nn.Module):
    """A small VGG-style multi-label classifier: ``features`` (``depth`` blocks of two 3x3 convs,
    BatchNorm, ReLU, each but the last followed by 2x2 max-pooling), global average pooling and
    a linear layer to K logits. ``features`` is the default EigenCAM layer."""

    def __init__(self, in_channels: int, num_classes: int, width: int, depth: int):
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_channels
        for i in range(depth):
            cout = width * 2 ** min(i, 2)
            layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
            layers += [nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
            if i < depth - 1:
                layers.append(nn.MaxPool2d(2))
            cin = cout
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(cin, num_classes)

    def forward(self, zs: torch.Tensor) -> torch.Tensor:
        x = self.features(zs)  # (B, F, h', w')
        return self.classifier(x.mean(dim=(2, 3)))  # (B, K) logits


def densenet121_classifier(in_channels: int, num_classes: int, stem: str = "imagenet") -> nn.Module:
    """torchvision DenseNet121 (no pre-trained weights) whose first convolution takes ``in_channels``.

    ``stem="imagenet"`` keeps the 7x7 stride-2 convolution and max-pooling (32x downsampling:
    latents of at least 32 x 32, e.g. 512-pixel images); ``"small"`` uses a 3x3 stride-1
    convolution without pooling (8x downsampling), for the small latents of the demo.
    """
    model = torchvision.models.densenet121(weights=None, num_classes=num_classes)
    if stem == "imagenet":
        model.features.conv0 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    elif stem == "small":
        model.features.conv0 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        model.features.pool0 = nn.Identity()
    else:
        raise ValueError(f"stem {stem!r} is not one of {STEMS}")
    nn.init.kaiming_normal_(model.features.conv0.weight)
    return model


def min_latent_side(arch: str, depth: int, stem: str) -> int:
    """The smallest latent side the classifier accepts (every pooling must leave at least 1 x 1)."""
    if arch == "densenet121":
        return 32 if stem == "imagenet" else 8
    return 2 ** (depth - 1)


def build_classifier(arch: str, in_channels: int, num_classes: int, width: int, depth: int, stem: str) -> nn.Module:
    if arch == "vgg":
        return VGGClassifier(in_channels, num_classes, width, depth)
    if arch == "densenet121":
        return densenet121_classifier(in_channels, num_classes, stem)
    raise ValueError(f"classifier {arch!r} is not one of {ARCHITECTURES}")


class SparseLatentModel(nn.Module):
    """S, D and C together; ``forward(z)`` returns (z^s, D(z^s), C(z^s))."""

    def __init__(self, student: Student, decoder: Decoder, classifier: nn.Module):
        super().__init__()
        self.student, self.decoder, self.classifier = student, decoder, classifier

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        zs = self.student(z)  # (B, C', h, w)
        return zs, self.decoder(zs), self.classifier(zs)


class LatentClassifier(nn.Module):
    """C(S(z)): the classifier read from the latent z, as EigenCAM and pairing see it."""

    def __init__(self, student: Student, classifier: nn.Module):
        super().__init__()
        self.student, self.classifier = student, classifier

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.student(z))  # (B, K) logits
