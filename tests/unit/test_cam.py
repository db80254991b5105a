"""ltaug.method.cam: the sign convention, equality with pytorch-grad-cam, batch-size invariance, the store, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import zarr
from helpers.data import synthetic_latents, write_latent_store
from pytorch_grad_cam import EigenCAM
from pytorch_grad_cam.activations_and_gradients import ActivationsAndGradients
from pytorch_grad_cam.utils.image import scale_cam_image
from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection
from helpers.stage_models import CLASSES, cam_store_for, save_tiny_il

from ltaug.backbone.latents import open_latents
from ltaug.common.errors import ConfigError, InputError
from ltaug.method.cam import (
    CamConfig,
    cam_maps,
    cam_rows,
    create_cam_store,
    gather_cams,
    il_fingerprint,
    open_cams,
    select_maps,
)
from ltaug.method.cam_methods import (
    ClonedActivationsAndGradients,
    OrientedEigenCAM,
    build_cam,
    class_cam_batch,
    default_target_layer,
    orient,
    target_module,
)
from ltaug.method.checkpoint import load_il_model
from ltaug.method.networks import LatentClassifier

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("cam")
    z, labels = synthetic_latents(40, [0.4, 0.3, 0.1, 0.1, 0.2], shape=(4, 8, 8), seed=1)
    z[::3] *= -1  # a varied batch: the layer's principal direction differs between samples
    latents = write_latent_store(root / "train.zarr", z, labels, CLASSES, chunk=16)
    return root, latents, save_tiny_il(root / "model.pt", seed=2)


@pytest.fixture(scope="module")
def store(inputs):
    root, latents, model = inputs
    return cam_store_for(latents, model, root / "cam.zarr", batch_size=7, chunk_size=16)


# ---------------------------------------------------------------------------- the sign convention


def test_orient_points_the_projection_at_the_active_positions():
    activations = np.zeros((1, 2, 2, 2), dtype=np.float32)  # (B, F, h', w'): one active position, (0, 0)
    activations[0, :, 0, 0] = [4.0, 2.0]
    p = np.array([[[3.0, -1.0], [-1.0, -1.0]]], dtype=np.float32)  # a projection, either sign
    assert np.array_equal(orient(p, activations), p)
    assert np.array_equal(orient(-p, activations), p)


def test_orient_decides_per_sample():
    activations = np.random.default_rng(0).random((3, 4, 5, 5)).astype(np.float32)
    p = get_2d_projection(activations)
    signs = np.array([1, -1, 1], dtype=np.float32)[:, None, None]
    assert np.allclose(orient(p * signs, activations), orient(p, activations))
    mean = activations.mean(axis=1)
    oriented = orient(p, activations)
    for i in range(3):  # the convention: positive correlation with the mean activation
        assert np.corrcoef(oriented[i].ravel(), mean[i].ravel())[0, 1] > 0


class Spot(nn.Module):
    """A classifier whose `features` is the identity: the activations are the input itself."""

    def __init__(self):
        super().__init__()
        self.features = nn.Identity()
        self.head = nn.Linear(3, 2)

    def forward(self, x):
        return self.head(self.features(x).mean(dim=(2, 3)))


def test_oriented_map_is_high_where_the_layer_is_active():
    x = torch.zeros(2, 3, 6, 6)
    x[0, :, 1, 4] = torch.tensor([5.0, 3.0, 4.0])  # a bright spot in every channel
    x[1, :, 4, 0] = torch.tensor([1.0, 6.0, 2.0])
    x += 0.01 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    model = Spot()
    with OrientedEigenCAM(model, [model.features]) as cam:
        maps = cam(x, targets=None)  # (2, 6, 6)
    assert maps[0].argmax() == np.ravel_multi_index((1, 4), (6, 6)) and maps[0].max() == pytest.approx(1, abs=1e-6)
    assert maps[1].argmax() == np.ravel_multi_index((4, 0), (6, 6))


class TwoFindings(nn.Module):
    """A classifier whose class k is the mean of input channel k through a 1x1 identity convolution + ReLU."""

    def __init__(self, k: int = 3):
        super().__init__()
        conv = nn.Conv2d(k, k, 1, bias=False)
        conv.weight.data = torch.eye(k)[:, :, None, None]
        self.features = nn.Sequential(conv, nn.ReLU())

    def forward(self, x):
        return self.features(x).mean(dim=(2, 3))  # (B, K) logits


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "hirescam", "layercam"])
def test_class_specific_map_peaks_inside_its_own_finding(method):
    x = 0.05 * torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    x[:, 1, 5:7, 1:3] += 2.0  # class 1's "finding": a 2 x 2 patch at rows 5-6, cols 1-2
    x[:, 2, 0:2, 6:8] += 3.0  # class 2's, brighter, elsewhere
    model = TwoFindings()
    with build_cam(method, model, model.features) as cam:
        m1, m2 = class_cam_batch(cam, x, 1), class_cam_batch(cam, x, 2)  # (4, 8, 8) each
    for maps, (rows, cols) in ((m1, (slice(5, 7), slice(1, 3))), (m2, (slice(0, 2), slice(6, 8)))):
        peak = np.unravel_index(maps.reshape(4, -1).argmax(axis=1), (8, 8))
        assert ((peak[0] >= rows.start) & (peak[0] < rows.stop) & (peak[1] >= cols.start) & (peak[1] < cols.stop)).all()
        assert np.allclose(maps.max(axis=(1, 2)), 1, atol=1e-5) and maps.min() >= 0
        inside = np.zeros((8, 8), dtype=bool)
        inside[rows, cols] = True
        assert (maps[:, inside] > 0.5).all() and (maps[:, ~inside] < 0.5).all()  # M^S at 0.5 is the finding


class InPlace(nn.Module):
    """A DenseNet-like tail: the target layer (a BatchNorm) is followed by an in-place ReLU."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(inplace=True))
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        return self.head(self.features(x).mean(dim=(2, 3)))


def test_activations_are_copied_before_an_in_place_relu_overwrites_them():
    torch.manual_seed(0)
    model = InPlace().eval()
    x = torch.randn(3, 3, 6, 6)
    untouched = []
    hook = model.features[1].register_forward_hook(lambda m, i, o: untouched.append(o.detach().clone()))
    ours = ClonedActivationsAndGradients(model, [model.features[1]], None)
    library = ActivationsAndGradients(model, [model.features[1]], None)
    model(x)
    hook.remove()
    kept, overwritten = ours.activations[0], library.activations[0]
    ours.release()
    library.release()
    assert (untouched[0] < 0).any()  # the BatchNorm output has negative values that the ReLU then zeroes
    assert torch.equal(kept, untouched[0])
    assert torch.equal(overwritten, untouched[0].clamp(min=0))  # the library's own copy: the ReLU's output
    with build_cam("eigencam", model, model.features[1]) as cam:
        maps = cam(x, targets=None)
    want = OrientedEigenCAM.get_cam_image(None, x, None, None, untouched[0].numpy(), None, False)  # (3, 6, 6)
    want = np.maximum(want, 0)
    want = (want - want.min(axis=(1, 2), keepdims=True)) / (1e-7 + np.ptp(want, axis=(1, 2), keepdims=True))
    np.testing.assert_allclose(maps, want, atol=1e-5)


def test_default_target_layer_is_the_last_before_any_pooling(tmp_path):
    il = load_il_model(save_tiny_il(tmp_path / "vgg.pt"))
    assert default_target_layer(il.model.classifier) == "features.5"  # conv, BN, ReLU, conv, BN, ReLU | max-pool
    dense = load_il_model(save_tiny_il(tmp_path / "d.pt", latent_shape=(4, 16, 16), classifier="densenet121",
                                       classifier_stem="small"))  # fmt: skip
    assert default_target_layer(dense.model.classifier) == "features.denseblock1"


def test_select_maps_reads_each_rows_class_and_refuses_uncomputed_ones():
    maps = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 2, 2)  # (B, M, h, w)
    out = select_maps(maps, ["A", "B", "C"], ["C", "A"])
    assert np.array_equal(out[0], maps[0, 2]) and np.array_equal(out[1], maps[1, 0])
    assert np.array_equal(select_maps(maps[:, 0], [], ["C", "A"]), maps[:, 0])  # a class-agnostic block as it is
    maps[1, 0] = np.nan
    with pytest.raises(InputError, match="not positive for"):
        select_maps(maps, ["A", "B", "C"], ["C", "A"], "cam.zarr")
    with pytest.raises(InputError, match=r"cam\.zarr: no maps of class\(es\) \['D'\]"):
        select_maps(maps, ["A", "B", "C"], ["D", "A"], "cam.zarr")


def test_class_specific_store_keeps_maps_of_positive_samples_only(inputs, tmp_path):
    root, latents, model = inputs
    cams = open_cams(cam_store_for(latents, model, tmp_path / "cam.zarr", method="layercam", target_layer="auto"))
    maps, labels = cams["maps"][:], open_latents(latents)["labels"][:]
    assert cams.attrs["map_classes"] == ["Cardiomegaly", "Pleural Effusion", "Nodule", "Fracture"]
    assert maps.shape == (40, 4, 8, 8) and cams.attrs["layer_shape"] == [8, 8] and cams.attrs["method"] == "layercam"
    computed = ~np.isnan(maps).any(axis=(2, 3))  # (N, M)
    assert np.array_equal(computed, labels[:, :4].astype(bool))
    assert np.nanmin(maps) >= 0 and np.nanmax(maps) <= 1


# ---------------------------------------------------------------------------- the store


def library_maps(model: nn.Module, layer: nn.Module, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """pytorch-grad-cam's EigenCAM called directly on ``x``, after the sign convention; and which samples it flipped.

    Where the library's principal component already follows the convention the map is the
    library's own result; elsewhere it is the library's post-processing (cut at 0, resize to the
    input, scale to [0, 1], as BaseCAM does) of the negated projection.
    """
    captured = []
    hook = layer.register_forward_hook(lambda m, i, o: captured.append(o.detach().numpy()))
    with torch.no_grad(), EigenCAM(model, [layer]) as cam:
        library = cam(x, targets=None)  # (B, h, w)
    hook.remove()
    raw = get_2d_projection(captured[0])  # the library's projection with its own sign
    flipped = ~np.isclose(orient(raw, captured[0]), raw).all(axis=(1, 2))  # (B,)
    size = (x.shape[-1], x.shape[-2])
    negated = scale_cam_image(np.maximum(scale_cam_image(np.maximum(-raw, 0), size), 0))
    return np.where(flipped[:, None, None], negated, library), flipped


def test_stored_map_equals_pytorch_grad_cam_called_directly(inputs, store):
    root, latents, model = inputs
    il = load_il_model(model)
    classifier = LatentClassifier(il.model.student, il.model.classifier)
    want, flipped = library_maps(classifier, il.model.classifier.features, torch.from_numpy(open_latents(latents)["z"][:]))
    np.testing.assert_allclose(open_cams(store)["maps"][:], want, atol=1e-5)


def test_oriented_eigencam_equals_the_library_on_both_branches():
    x = torch.randn(64, 3, 6, 6, generator=torch.Generator().manual_seed(0))
    model = Spot()
    want, flipped = library_maps(model, model.features, x)
    assert 10 < flipped.sum() < 54  # the library's sign is arbitrary: both branches occur
    with OrientedEigenCAM(model, [model.features]) as cam:
        np.testing.assert_allclose(cam(x, targets=None), want, atol=1e-5)


def test_store_contents(inputs, store):
    root, latents, model = inputs
    cams, source = open_cams(store), open_latents(latents)
    assert cams["maps"].shape == (40, 8, 8) and cams["probs"].shape == (40, len(CLASSES))
    maps = cams["maps"][:]
    assert maps.min() >= 0 and maps.max() <= 1 and np.allclose(maps.max(axis=(1, 2)), 1, atol=1e-5)
    assert cams["ids"][:].tolist() == source["ids"][:].tolist()
    assert np.array_equal(cams["labels"][:], source["labels"][:])
    il = load_il_model(model)
    with torch.no_grad():
        logits = LatentClassifier(il.model.student, il.model.classifier)(torch.from_numpy(source["z"][:]))
    np.testing.assert_allclose(cams["probs"][:], torch.sigmoid(logits).numpy(), atol=1e-6)
    assert cams.attrs["target_layer"] == "features" and cams.attrs["classes"] == CLASSES
    assert cams.attrs["method"] == "eigencam" and cams.attrs["map_classes"] == [] and cams.attrs["layer_shape"] == [4, 4]
    assert cams.attrs["model_fingerprint"] == source.attrs["model_fingerprint"] and len(cams.attrs["il_fingerprint"]) == 16


def test_batch_and_chunk_size_do_not_change_the_maps(inputs, store, tmp_path):
    root, latents, model = inputs
    other = cam_store_for(latents, model, tmp_path / "cam.zarr", batch_size=40, chunk_size=40)
    a, b = open_cams(store), open_cams(other)
    np.testing.assert_allclose(a["maps"][:], b["maps"][:], atol=1e-6)
    np.testing.assert_allclose(a["probs"][:], b["probs"][:], atol=1e-6)


def test_a_range_of_rows_writes_only_those_rows(inputs, store, tmp_path):
    root, latents, model = inputs
    il = load_il_model(model)
    source = open_latents(latents)
    out = zarr.open_group(tmp_path / "part.zarr", mode="w", zarr_format=3)
    create_cam_store(out, 40, (8, 8), len(CLASSES), chunk=16)
    classifier = LatentClassifier(il.model.student, il.model.classifier)
    cam_rows(classifier, il.model.classifier.features, source, out, 16, 32, 5, CPU)
    full = open_cams(store)["maps"][:]
    np.testing.assert_allclose(out["maps"][16:32], full[16:32], atol=1e-6)
    assert np.isnan(out["maps"][:16]).all() and np.isnan(out["maps"][32:]).all()  # untouched rows keep the fill value
    assert out["ids"][16:32].tolist() == source["ids"][16:32].tolist()
    with pytest.raises(ValueError, match="chunk boundary"):
        cam_rows(classifier, il.model.classifier.features, source, out, 5, 20, 5, CPU)


# ---------------------------------------------------------------------------- shards


def cam_shards(latents, model, root, shards: int, **cfg) -> list:
    paths = [root / f"shards/train/{s}-of-{shards}.zarr" for s in range(1, shards + 1)]
    for s, path in enumerate(paths, start=1):
        cam_maps(latents, model, path, CamConfig(**{"method": "eigencam", "target_layer": "features", **cfg}), CPU,
                 shard=(s, shards))  # fmt: skip
    return paths


@pytest.mark.parametrize("shards,rows", [(2, [16, 24]), (3, [16, 16, 8]), (5, [0, 16, 0, 16, 8])])
def test_gathered_cam_shards_equal_the_unsharded_store(inputs, store, tmp_path, shards, rows):
    root, latents, model = inputs  # 40 rows in chunks of 16: shards take whole chunks
    parts = cam_shards(latents, model, tmp_path, shards, batch_size=7, chunk_size=16)
    assert [open_cams(p)["maps"].shape[0] for p in parts] == rows
    assert [open_cams(p).attrs["first_row"] for p in parts] == np.cumsum([0, *rows[:-1]]).tolist()
    assert {open_cams(p).attrs["split_rows"] for p in parts} == {40}
    assert gather_cams(parts, tmp_path / "train.zarr", {"il_fingerprint": il_fingerprint(model)}) == 40
    joined, single = open_cams(tmp_path / "train.zarr"), open_cams(store)
    assert dict(joined.attrs) == dict(single.attrs)  # no shard keys, complete
    for name in ("maps", "probs", "labels", "ids"):
        assert joined[name].chunks == single[name].chunks
        assert joined[name][:].tolist() == single[name][:].tolist(), name  # value for value: the same batches
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shards", "train.zarr"]  # no temporary left


def test_gather_cams_refuses_shards_out_of_order_missing_or_of_another_model(inputs, tmp_path):
    root, latents, model = inputs
    parts = cam_shards(latents, model, tmp_path, 3, chunk_size=16)
    out = tmp_path / "train.zarr"
    with pytest.raises(InputError, match=rf"{parts[1]}: expected shard 1 of 3 starting at row 0 of its split, found "
                                         r"shard 2 of 3 starting at row 16; delete the shard stores of this split "
                                         r"and rerun cam_maps"):  # fmt: skip
        gather_cams([parts[1], parts[0], parts[2]], out)
    with pytest.raises(InputError, match=r"no CAM store here; run the cam_maps stage"):
        gather_cams([parts[0], tmp_path / "nowhere.zarr", parts[2]], out)
    with pytest.raises(InputError, match=r"made with il_fingerprint="):
        gather_cams(parts, out, {"il_fingerprint": "0" * 16})
    other = cam_maps(latents, model, tmp_path / "other.zarr", CamConfig(method="eigencam", target_layer="features",
                     chunk_size=16, batch_size=3), CPU, shard=(2, 3))  # fmt: skip
    with pytest.raises(InputError, match=r"other.zarr: made with other settings than .*1-of-3.zarr \(config differ\)"):
        gather_cams([parts[0], tmp_path / "other.zarr", parts[2]], out)
    assert other is not None and not out.exists()  # nothing half-written
    with pytest.raises(ConfigError, match=r"shard 4 of 3: expected 1 <= shard <= shards \(cam.shards\)"):
        cam_maps(latents, model, tmp_path / "bad.zarr", CamConfig(), CPU, shard=(4, 3))


def test_il_fingerprint_is_the_weights_not_the_wall_times(inputs, tmp_path):
    root, latents, model = inputs
    state = torch.load(model, weights_only=True)
    again = dict(state, history=[dict(row, seconds=row.get("seconds", 0) + 9.5) for row in state["history"]])
    torch.save(again, tmp_path / "retrained.pt")  # the same weights, another run's timings
    assert (tmp_path / "retrained.pt").read_bytes() != model.read_bytes()
    assert il_fingerprint(tmp_path / "retrained.pt") == il_fingerprint(model)
    name = next(iter(state["classifier"]))
    other = dict(state, classifier={**state["classifier"], name: state["classifier"][name] + 1e-6})
    torch.save(other, tmp_path / "other.pt")
    assert il_fingerprint(tmp_path / "other.pt") != il_fingerprint(model)


def test_densenet121_classifier_at_features_norm5(tmp_path):
    z, labels = synthetic_latents(6, [0.4, 0.3, 0.1, 0.1, 0.2], shape=(4, 16, 16))
    latents = write_latent_store(tmp_path / "train.zarr", z, labels, CLASSES)
    model = save_tiny_il(tmp_path / "model.pt", latent_shape=(4, 16, 16), classifier="densenet121",
                         classifier_stem="small")  # fmt: skip
    cams = open_cams(cam_store_for(latents, model, tmp_path / "cam.zarr", target_layer="features.norm5"))
    maps = cams["maps"][:]  # norm5 is 2 x 2 here (three 2x2 transitions), resized to 16 x 16
    assert maps.shape == (6, 16, 16) and maps.min() >= 0 and np.allclose(maps.max(axis=(1, 2)), 1, atol=1e-5)
    assert cams.attrs["target_layer"] == "features.norm5"


def test_a_layer_without_spatial_extent_is_refused(tmp_path):
    z, labels = synthetic_latents(2, [0.4, 0.3, 0.1, 0.1, 0.2], shape=(4, 8, 8))
    latents = write_latent_store(tmp_path / "train.zarr", z, labels, CLASSES)
    model = save_tiny_il(tmp_path / "model.pt", classifier="densenet121", classifier_stem="small")
    with pytest.raises(ConfigError, match=r"cam\.target_layer: the layer's output has shape \(1024, 1, 1\)"):
        cam_store_for(latents, model, tmp_path / "cam.zarr", target_layer="features.norm5")
    assert not (tmp_path / "cam.zarr").exists()


# ---------------------------------------------------------------------------- errors


def test_unknown_target_layer_lists_the_modules(inputs):
    il = load_il_model(inputs[2])
    with pytest.raises(ConfigError, match=r"cam\.target_layer: 'layer4' is not a module of the IL classifier.*features"):
        target_module(il.model.classifier, "layer4")
    assert target_module(il.model.classifier, "features.0") is il.model.classifier.features[0]


def test_latents_of_another_diffusion_model_are_refused(inputs, tmp_path):
    root, latents, model = inputs
    z, labels = synthetic_latents(8, [0.4, 0.3, 0.1, 0.1, 0.2], shape=(4, 8, 8))
    other = write_latent_store(tmp_path / "other.zarr", z, labels, CLASSES, model_fingerprint="0" * 64)
    with pytest.raises(InputError, match=r"other\.zarr: these latents were made by diffusion model .* rerun train_il"):
        cam_store_for(other, model, tmp_path / "cam.zarr")
    assert not (tmp_path / "cam.zarr").exists()


def test_incomplete_store_is_refused(tmp_path):
    zarr.open_group(tmp_path / "cam.zarr", mode="w", zarr_format=3)
    with pytest.raises(InputError, match="did not finish"):
        open_cams(tmp_path / "cam.zarr")
    with pytest.raises(InputError, match="run the cam_maps stage"):
        open_cams(tmp_path / "none.zarr")


def test_config_errors():
    with pytest.raises(ConfigError, match=r"cam\.batch_size: 0 is less than the minimum of 1 \(latents per forward pass"):
        CamConfig(batch_size=0)
