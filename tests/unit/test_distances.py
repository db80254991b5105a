"""Frechet and kernel distances: closed forms on Gaussians, torchmetrics on the same features, config errors."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import scipy.linalg
import torch

from ltaug.common.errors import ConfigError
from ltaug.evaluation.distances import (
    feature_frechet_distance,
    frechet_distance,
    gaussian_stats,
    kernel_distance,
    memorisation_threshold,
    nearest,
    prdc,
)
from ltaug.evaluation.features import FidConfig, InceptionFeatures


def rotation(d: int, seed: int) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    return q


def test_frechet_distance_of_gaussians_with_known_distance():
    # Same eigenvectors: FD = |mu1 - mu2|^2 + sum_i (sqrt(a_i) - sqrt(b_i))^2
    a, b = np.array([1.0, 4.0, 9.0, 0.25]), np.array([4.0, 1.0, 9.0, 1.0])
    mu1, mu2 = np.array([0.0, 1.0, 2.0, 3.0]), np.array([1.0, 1.0, 0.0, 3.0])
    known = 1 + 4 + (1 - 2) ** 2 + (2 - 1) ** 2 + 0 + (0.5 - 1) ** 2  # = 7.25
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(known, abs=1e-12)
    r = rotation(4, 0)
    assert frechet_distance(r @ mu1, r @ np.diag(a) @ r.T, r @ mu2, r @ np.diag(b) @ r.T) == pytest.approx(known, abs=1e-9)
    assert frechet_distance(mu1, np.diag(a), mu1, np.diag(a)) == pytest.approx(0, abs=1e-12)


def test_frechet_distance_equals_the_matrix_square_root_formula():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(6, 6)), rng.normal(size=(6, 6))
    s1, s2 = x @ x.T + 0.1 * np.eye(6), y @ y.T + 0.1 * np.eye(6)  # general, non-commuting covariances
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    direct = ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * scipy.linalg.sqrtm(s1 @ s2).real)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(direct, rel=1e-9)


def test_feature_distance_estimates_the_gaussians_and_matches_torchmetrics():
    from torchmetrics.image.fid import FrechetInceptionDistance

    rng = np.random.default_rng(2)
    n = 20000
    real = rng.normal([0, 0, 0], [1, 2, 3], size=(n, 3))
    fake = rng.normal([1, 0, 0], [1, 1, 3], size=(n, 3))
    known = 1 + (2 - 1) ** 2  # mean shift 1, one std 2 -> 1
    fd = feature_frechet_distance(real, fake)
    assert fd == pytest.approx(known, abs=0.05)

    class Identity(torch.nn.Module):
        num_features = 3

        def forward(self, x):
            return x

    metric = FrechetInceptionDistance(feature=Identity())
    metric.update(torch.from_numpy(real), real=True)
    metric.update(torch.from_numpy(fake), real=False)
    assert float(metric.compute()) == pytest.approx(fd, rel=1e-6)
    mu, sigma = gaussian_stats(real)
    assert np.allclose(sigma, np.cov(real, rowvar=False))


def test_kernel_distance_matches_torchmetrics_and_orders_distances():
    from torchmetrics.image.kid import KernelInceptionDistance

    rng = np.random.default_rng(3)
    real = rng.normal(size=(40, 8))
    near, far = rng.normal(size=(40, 8)), rng.normal(2, 1, size=(40, 8))

    class Identity(torch.nn.Module):
        num_features = 8

        def forward(self, x):
            return x

    metric = KernelInceptionDistance(feature=Identity(), subsets=1, subset_size=40)  # one subset = all rows
    metric.update(torch.from_numpy(real), real=True)
    metric.update(torch.from_numpy(far), real=False)
    theirs = float(metric.compute()[0])
    ours, std = kernel_distance(real, far, subsets=3, subset_size=100, seed=0)  # capped at 40: every subset is all rows
    assert ours == pytest.approx(theirs, rel=1e-9) and std == pytest.approx(0, abs=1e-12)
    assert abs(kernel_distance(real, near, 20, 20, 0)[0]) < 0.1 * ours
    with pytest.raises(ValueError, match="at least 2 samples"):
        kernel_distance(real, far[:1], 2, 10, 0)


def test_fid_config_names_the_key(tmp_path):
    with pytest.raises(ConfigError, match="eval.fid.inception_weights: .*nowhere.pth does not exist"):
        FidConfig(inception_weights=str(tmp_path / "nowhere.pth"))
    with pytest.raises(ConfigError, match="eval.fid.real_splits"):
        FidConfig(real_splits=["holdout"])
    assert FidConfig().metric == "FD-DenseNet"
    weights = tmp_path / "inception.pth"
    weights.write_bytes(b"")
    assert FidConfig(inception_weights=str(weights)).metric == "FID"


def test_inception_without_torch_fidelity_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch_fidelity", None)  # as if the optional extra were not installed
    with pytest.raises(ConfigError, match=r"torch_fidelity is not installed; install torch-fidelity \(pip install -e '\.\[fid\]'"):
        InceptionFeatures(str(tmp_path / "w.pth"), torch.device("cpu"))


def test_inception_reads_local_weights_and_gives_2048_features(tmp_path, monkeypatch):
    """The FID path with a local weights file (torch-fidelity's layout; random values made here, nothing downloaded)."""
    import torch_fidelity.feature_extractor_inceptionv3 as tf_inception

    with monkeypatch.context() as patch:  # build the network once without weights, to write a file of its layout
        patch.setattr(tf_inception, "load_state_dict_from_url", lambda *a, **k: {})
        patch.setattr(torch.nn.Module, "load_state_dict", lambda self, *a, **k: None)
        torch.manual_seed(0)
        net = tf_inception.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    weights = tmp_path / "pt_inception-2015-12-05.pth"
    torch.save(net.state_dict(), weights)
    features = InceptionFeatures(str(weights), torch.device("cpu"))
    images = torch.randint(0, 256, (3, 3, 64, 64), dtype=torch.uint8)
    out = features(images, batch_size=2)
    assert out.shape == (3, 2048) and out.dtype == np.float64 and np.isfinite(out).all()
    assert np.allclose(features(images[:1], batch_size=1), out[:1], atol=1e-5)  # batching changes nothing
    # the values are those of torch-fidelity's own network read from the same file (the weights were loaded, not drawn)
    reference = tf_inception.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(weights))
    with torch.no_grad():
        expected = reference.eval()(images)[0].double().numpy()
    assert np.allclose(out, expected, rtol=1e-4, atol=1e-5)
    assert FidConfig(inception_weights=str(weights)).metric == "FID"


def test_prdc_of_a_copy_and_of_a_distant_set():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(60, 8))
    copy = prdc(real, real.copy(), k=5)
    assert copy["precision"] == 1.0 and copy["recall"] == 1.0 and copy["coverage"] == 1.0 and copy["k"] == 5
    far = prdc(real, real + 100.0, k=5)
    assert far == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0, "k": 5}
    # half the fake samples on the real ones, half far away: precision and density halve
    half = prdc(real, np.concatenate([real[:30], real[:30] + 100.0]), k=5)
    assert half["precision"] == pytest.approx(0.5) and half["coverage"] <= 1.0
    assert prdc(real[:4], real[:10], k=5)["k"] == 2  # capped below the smaller set
    with pytest.raises(ValueError, match="at least 3 samples"):
        prdc(real[:2], real, k=5)


def test_copies_of_training_images_are_memorised_and_fresh_samples_are_not():
    rng = np.random.default_rng(1)
    train = rng.normal(size=(500, 16))
    test = rng.normal(size=(200, 16))  # real held-out images: the reference distances
    reference, _ = nearest(train, test)
    threshold = memorisation_threshold(reference, 5)
    assert threshold == pytest.approx(np.percentile(reference, 5))
    copies = train[[3, 77, 400]]
    distance, which = nearest(train, copies)
    assert (distance < 1e-6).all() and which.tolist() == [3, 77, 400] and np.mean(distance < threshold) == 1.0
    fresh = rng.normal(size=(400, 16))  # drawn like the test images: about 5 % below the 5th percentile
    share = np.mean(nearest(train, fresh)[0] < threshold)
    assert 0.0 < share < 0.15
