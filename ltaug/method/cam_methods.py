"""The CAM methods on the IL classifier: pytorch-grad-cam with copying hooks, EigenCAM with a fixed sign.

What ``cam.method`` computes for a batch of latents (see ltaug.method.cam for the stage and the
store): ``eigencam`` (class-agnostic, oriented by :data:`SIGN_CONVENTION`) or one of the
class-specific methods in ``CLASS_SPECIFIC`` for a ``ClassifierOutputTarget``, read at
``cam.target_layer`` (:func:`default_target_layer`: the last layer before any pooling).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
from pytorch_grad_cam import EigenCAM, GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM
from pytorch_grad_cam.activations_and_gradients import ActivationsAndGradients
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from ltaug.common.errors import ConfigError

SIGN_CONVENTION = "positive correlation with the target layer's mean activation over channels"


CLASS_SPECIFIC = {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus, "hirescam": HiResCAM, "layercam": LayerCAM}


class ClonedActivationsAndGradients(ActivationsAndGradients):
    """pytorch-grad-cam's hooks, keeping a copy of the activation: the library keeps
    ``output.cpu().detach()``, on the CPU the same storage that a following in-place ReLU
    (torchvision's DenseNet after ``norm5``) overwrites before the map is computed."""

    def save_activation(self, module, input, output):
        activation = output if self.reshape_transform is None else self.reshape_transform(output)
        self.activations.append(activation.detach().clone().cpu())


def build_cam(method: str, model: nn.Module, layer: nn.Module):
    """The pytorch-grad-cam object of ``method`` on ``layer`` of ``model`` with copying hooks; a context manager."""
    cam = (OrientedEigenCAM if method == "eigencam" else CLASS_SPECIFIC[method])(model, [layer])
    cam.activations_and_grads.release()
    cam.activations_and_grads = ClonedActivationsAndGradients(model, [layer], None)
    return cam


# ---------------------------------------------------------------------------- EigenCAM with a sign


def first_component(activations: np.ndarray) -> np.ndarray:
    """(B, F, h', w') activations -> (B, h', w') projections on their first principal component.

    pytorch-grad-cam's ``get_2d_projection``: each sample's (h'w', F) activations, centred over
    positions, projected on the first right singular vector; computed here with one batched
    reduced SVD instead of a full SVD per sample (the same vector, up to the sign that
    :func:`orient` fixes, at a tenth of the cost).
    """
    b, f = activations.shape[:2]
    x = np.nan_to_num(activations).reshape(b, f, -1).transpose(0, 2, 1)  # (B, h'w', F)
    x = x - x.mean(axis=1, keepdims=True)  # centred over positions
    vt = np.linalg.svd(x, full_matrices=False)[2]  # (B, min(h'w', F), F)
    return (x @ vt[:, 0, :, None])[..., 0].reshape(b, *activations.shape[2:])  # (B, h', w')


def orient(projection: np.ndarray, activations: np.ndarray) -> np.ndarray:
    """Flip each (h', w') projection of a (B, h', w') batch whose correlation with the mean
    activation of (B, F, h', w') ``activations`` over F is negative (the sign convention)."""
    mean = np.nan_to_num(activations).mean(axis=1)  # (B, h', w')
    p = projection - projection.mean(axis=(1, 2), keepdims=True)
    a = mean - mean.mean(axis=(1, 2), keepdims=True)
    sign = np.where((p * a).sum(axis=(1, 2)) < 0, -1.0, 1.0).astype(projection.dtype)  # (B,)
    return projection * sign[:, None, None]


class OrientedEigenCAM(EigenCAM):
    """pytorch-grad-cam's EigenCAM with the first principal component oriented by :func:`orient`.

    The projection is the library's (see :func:`first_component`); everything else (hooks,
    cutting at 0, resizing to the input's h x w, scaling to [0, 1]) is the library's code. Use it
    as a context manager, as the library's CAMs are meant to be used.
    """

    def get_cam_image(self, input_tensor, target_layer, targets, activations, grads, eigen_smooth):
        if activations.ndim != 4 or activations.shape[2] * activations.shape[3] < 2:
            raise ConfigError(
                f"cam.target_layer: the layer's output has shape {tuple(activations.shape[1:])} for latents of "
                f"{tuple(input_tensor.shape[1:])}; EigenCAM needs a spatial map of at least 2 positions. Choose an "
                f"earlier layer (e.g. features.denseblock3 for densenet121) or use larger latents."
            )
        return orient(first_component(activations), activations)  # (B, h', w')


# ---------------------------------------------------------------------------- the target layer and one batch


def default_target_layer(classifier: nn.Module) -> str:
    """The name of the classifier's last feature module before its first pooling or strided layer:
    the deepest layer that still has the latent resolution (``cam.target_layer: auto``)."""
    features = getattr(classifier, "features", None)
    if not isinstance(features, nn.Sequential):
        raise ConfigError("cam.target_layer: auto needs a classifier with a `features` sequence; name the layer instead.")
    last = None
    for name, module in features.named_children():
        stride = getattr(module, "stride", 1)
        strided = any(v > 1 for v in (stride if isinstance(stride, tuple) else (stride,)))
        if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)) or strided or type(module).__name__ == "_Transition":
            break
        if not isinstance(module, nn.Identity):
            last = name
    if last is None:
        raise ConfigError("cam.target_layer: auto found no layer before the classifier's first pooling; name the layer.")
    return f"features.{last}"


def target_module(classifier: nn.Module, name: str) -> nn.Module:
    """The classifier's submodule ``name`` (cam.target_layer), or a ConfigError listing the candidates."""
    if name == "auto":
        name = default_target_layer(classifier)
    try:
        return classifier.get_submodule(name)
    except AttributeError:
        names = [n for n, _ in classifier.named_modules() if n and n.count(".") < 2]  # two levels deep
        raise ConfigError(
            f"cam.target_layer: {name!r} is not a module of the IL classifier ({type(classifier).__name__}); "
            f"its modules include: {', '.join(names)}. Use auto (the last layer before any pooling), or e.g. "
            f"features.5 for the vgg classifier, features.denseblock1 for densenet121."
        ) from None


def cam_batch(cam: EigenCAM, z: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(B, C, h, w) latents -> EigenCAM maps (B, h, w) in [0, 1] and the classifier's probabilities (B, K)."""
    with torch.no_grad():  # EigenCAM needs no gradient
        maps = cam(input_tensor=z, targets=None)  # (B, h, w)
    probs = torch.sigmoid(cam.outputs.float()).cpu().numpy()  # (B, K), the same forward pass
    return maps.astype(np.float32), probs.astype(np.float32)


def class_cam_batch(cam, z: torch.Tensor, column: int) -> np.ndarray:
    """(B, C, h, w) latents -> class-specific maps (B, h, w) in [0, 1] for class column ``column``."""
    return cam(input_tensor=z, targets=[ClassifierOutputTarget(column)] * len(z)).astype(np.float32)
