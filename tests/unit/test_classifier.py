"""evaluate_classifier: the test split alone is scored; training is seeded; metrics, thresholds, mean and std."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
import torch
from helpers.data import write_dataset

from ltaug.common.errors import ConfigError, InputError
from ltaug.common.metrics import best_thresholds, mean_std, score_metrics
from ltaug.data.classes import LongTailConfig, split_classes
from ltaug.data.image_source import ImageSource
from ltaug.data.manifest import DataConfig, load_labels
from ltaug.data.synthetic import read_synthetic_set, write_synthetic_set
from ltaug.evaluation import classifier as evaluate
from ltaug.evaluation.classifier import (
    ClassifierConfig,
    evaluate_method,
    load_classifier,
    predict,
    save_classifier,
    train_classifier,
)
from ltaug.evaluation.schemes import TrainingPool

TINY = ClassifierConfig(image_size=32, growth_rate=4, block_config=[1, 1], num_init_features=8, steps=6, batch_size=8,
                        eval_every=3, seeds=[0], threads=1, precision="float32")  # fmt: skip


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: torch on one thread in this module


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Manifest frame and class split of a small data set (40/10/20 images; Nodule and Fracture are tail)."""
    root = tmp_path_factory.mktemp("data")
    cfg = DataConfig(**write_dataset(root, n={"train": 40, "val": 10, "test": 20}))
    manifest = load_labels(cfg).drop(columns=["_line", "_source"])
    split = split_classes(LongTailConfig(head_min_prevalence=0.2, tail_max_prevalence=0.05), manifest)
    return root, manifest, split


def synthetic_set(root, manifest, split, source_ids, name="smote"):
    """A synthetic set of 2 samples per tail class whose provenance names ``source_ids``."""
    n = 2 * len(split.tail)
    labels = np.zeros((n, len(split.classes)), dtype=np.uint8)
    tails = [t for t in split.tail for _ in range(2)]
    for i, t in enumerate(tails):
        labels[i, split.classes.index(t)] = 1
    images = np.random.default_rng(0).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    provenance = pd.DataFrame({"tail_class": tails, "source_id": (source_ids * n)[:n]})
    write_synthetic_set(root / name, name, images, provenance, labels, split.classes, split.tail, 2)
    return read_synthetic_set(root / name, split.classes, split.tail, 2)


def test_only_the_test_split_is_scored_and_never_trained_on(data, monkeypatch):
    root, manifest, split = data
    synthetic = synthetic_set(root, manifest, split, ["train-0001"])
    labels_of = {p: row for p, row in zip(manifest["path"], manifest[split.classes].to_numpy())}
    labels_of.update({p: row for p, row in zip(synthetic.paths(), synthetic.labels(split.classes))})
    seen = {}

    def fake_train(train, pool, val, val_labels, classes, cfg, seed, device, scheme, rebalancing, balance):
        seen["train"], seen["val"] = list(train.paths), list(val.paths)
        assert (pool.labels == np.stack([labels_of[p] for p in train.paths])).all() and pool.n_real == 40
        assert pool.made_for.tolist() == [split.classes.index(t) for t in synthetic.frame["tail_class"]]
        return torch.nn.Linear(1, 1), {"best_step": 1, "val_map": 1.0, "history": [], "synthetic_draw_share": 0.1}

    def oracle(model, source, device, batch_size=64):  # perfect scores: the labels of exactly the images given
        seen.setdefault("scored", []).append(list(source.paths))
        return np.stack([labels_of[p] for p in source.paths]).astype(float)

    monkeypatch.setattr(evaluate, "train_classifier", fake_train)
    monkeypatch.setattr(evaluate, "predict", oracle)
    results, _, meta, scores = evaluate_method("smote", manifest, split, [synthetic], TINY, torch.device("cpu"))

    paths = {s: set(manifest.loc[manifest["split"] == s, "path"]) for s in ("train", "val", "test")}
    assert set(seen["train"]) == paths["train"] | set(synthetic.paths()) and len(seen["train"]) == 40 + 4
    assert set(seen["val"]) == paths["val"]
    assert set(seen["scored"][0]) == paths["test"]  # the metrics: test rows only, none of train or val
    assert not (set(seen["train"]) | set(seen["val"])) & paths["test"]
    test = manifest[manifest["split"] == "test"]
    assert results["n"] == {"train_real": 40, "synthetic": 4, "val": 10, "test": 20}
    assert results["test_positives"] == {c: int(test[c].sum()) for c in split.classes}
    for c in split.classes:  # the oracle is perfect on the rows scored: AP 1, or undefined without a test positive
        ap = results["mean"]["ap"][c]
        assert ap == 1.0 if test[c].any() else math.isnan(ap), (c, ap)
    assert results["mean"]["map_tail"] == 1.0 and results["scored_split"] == "test"
    assert meta["method"] == "smote" and set(meta["thresholds"]) == set(split.classes)
    # what compare_methods resamples: every seed's scores of exactly the test rows, in manifest order
    assert scores["ids"].tolist() == test["id"].astype(str).tolist() and scores["classes"].tolist() == split.classes
    assert scores["scores"].shape == (len(TINY.seeds), len(test), len(split.classes)) and scores["scores"].dtype == np.float64
    np.testing.assert_array_equal(scores["labels"], test[split.classes].to_numpy())
    np.testing.assert_array_equal(scores["scores"][0], scores["labels"])  # the oracle's scores, unchanged


def test_a_set_made_from_a_test_image_is_refused(data):
    root, manifest, split = data
    leaky = synthetic_set(root, manifest, split, ["train-0003", "test-0002"], name="leaky")
    with pytest.raises(InputError, match=r"line 3: column 'source_id' names 'test-0002', an image of the test split"):
        evaluate_method("leaky", manifest, split, [leaky], TINY, torch.device("cpu"))


def test_a_held_out_image_is_the_oracle_s_alone(data):
    root, manifest, split = data
    held = manifest.assign(split=manifest["split"].where(manifest["id"] != "train-0003", "holdout"))
    for name in ("smote", "oracle"):
        made = synthetic_set(root, held, split, ["train-0003"], name=f"from-holdout-{name}")
        made = dataclasses.replace(made, info={**made.info, "method": name})
        if name == "oracle":
            evaluate.check_provenance(made, held)
        else:
            with pytest.raises(InputError, match=r"names 'train-0003', an image of the holdout split"):
                evaluate.check_provenance(made, held)


def test_seed_i_trains_with_draw_i_of_the_set(data, monkeypatch):
    root, manifest, split = data
    draws = [synthetic_set(root, manifest, split, ["train-0001"], name=f"draw{d}") for d in range(2)]
    seen = []

    def fake_train(train, pool, val, val_labels, classes, cfg, seed, device, scheme, rebalancing, balance):
        seen.append((seed, scheme, sorted(p for p in train.paths if "draw" in p)))
        return torch.nn.Linear(1, 1), {"best_step": 1, "val_map": 1.0, "history": [], "synthetic_draw_share": 0.5}

    monkeypatch.setattr(evaluate, "train_classifier", fake_train)
    monkeypatch.setattr(evaluate, "predict", lambda model, source, device, batch_size=64: np.full((len(source), len(split.classes)), 0.5))
    two = dataclasses.replace(TINY, seeds=[0, 1])
    results, *_ = evaluate_method("balanced+smote", manifest, split, draws, two, torch.device("cpu"), scheme="balanced")
    assert [(s, scheme) for s, scheme, _ in seen] == [(0, "balanced"), (1, "balanced")]
    assert seen[0][2] == sorted(draws[0].paths()) and seen[1][2] == sorted(draws[1].paths())
    assert [r["draw"] for r in results["runs"]] == [str(d.root) for d in draws] and results["scheme"] == "balanced"
    seen.clear()
    evaluate_method("smote", manifest, split, draws[:1], two, torch.device("cpu"))  # one draw serves every seed
    assert seen[0][2] == seen[1][2] == sorted(draws[0].paths())
    with pytest.raises(InputError, match="3 draws of its set for 2 classifier seeds"):
        evaluate_method("smote", manifest, split, draws + draws[:1], two, torch.device("cpu"))


def test_training_is_seeded_and_selects_on_validation(data):
    root, manifest, split = data
    rows = {s: manifest[manifest["split"] == s] for s in ("train", "val")}
    sources = {s: ImageSource(32, True, 1, None, r) for s, r in rows.items()}
    labels = {s: r[split.classes].to_numpy(dtype=np.uint8) for s, r in rows.items()}
    pool = TrainingPool(labels["train"], len(labels["train"]), np.zeros(0, dtype=np.int64))
    runs = [train_classifier(sources["train"], pool, sources["val"], labels["val"], split.classes, TINY, 7,
                             torch.device("cpu")) for _ in range(2)]  # fmt: skip
    (a, info), (b, _) = runs
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    assert [h["step"] for h in info["history"]] == [3, 6]
    best = max(info["history"], key=lambda h: h["val_map"])
    assert info["best_step"] == best["step"] and info["val_map"] == best["val_map"]
    # predictions do not depend on the batch size; a saved model predicts the same after loading
    scores = predict(a, sources["val"], torch.device("cpu"), batch_size=3)
    assert np.allclose(scores, predict(a, sources["val"], torch.device("cpu"), batch_size=64), atol=1e-6)
    save_classifier(root / "m.pt", a, {"config": TINY.__dict__ | {"block_config": [1, 1]}, "classes": split.classes})
    loaded, meta = load_classifier(root / "m.pt", torch.device("cpu"))
    assert np.allclose(predict(loaded, sources["val"], torch.device("cpu")), scores, atol=1e-6)
    # channels-last weights and inputs (about 1.2x faster steps on the CPU) are a layout only: the
    # same scores as the loaded weights in a contiguous model fed contiguous images
    convs = [m.weight for m in loaded.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    assert any(not w.is_contiguous() for w in convs)  # (a 1x1 kernel is both)
    plain = evaluate.build_densenet(TINY, len(split.classes)).eval()
    plain.load_state_dict(loaded.state_dict())
    images = sources["val"].batch(range(len(sources["val"])))
    assert evaluate.normalise(images).is_contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        contiguous = torch.sigmoid(plain(evaluate.normalise(images).contiguous())).double().numpy()
    assert np.allclose(contiguous, scores, atol=1e-6)


def test_metrics_means_and_thresholds_on_hand_made_values():
    labels = np.array([[1, 0], [0, 1], [1, 0], [0, 0]])
    scores = np.array([[0.9, 0.2], [0.1, 0.8], [0.4, 0.3], [0.5, 0.1]])
    m = score_metrics(labels, scores, ["H", "T"], ["H"], ["T"])
    assert m["ap"]["H"] == pytest.approx((1 + 2 / 3) / 2)  # ranks 1 and 3: precision 1, then 2/3
    assert m["ap"]["T"] == 1.0 and m["map_head"] == m["ap"]["H"] and m["map_tail"] == 1.0
    assert m["auroc"]["H"] == pytest.approx(0.75) and m["auroc_macro"] == pytest.approx((0.75 + 1) / 2)
    assert best_thresholds(labels, scores, ["H", "T"]) == {"H": 0.4, "T": 0.8}
    runs = [{"map_head": 0.5, "map_tail": 0.2, "map_all": 0.4, "auroc_macro": 0.6, "ap": {"T": 0.2}, "auroc": {"T": 0.5}},
            {"map_head": 0.7, "map_tail": math.nan, "map_all": 0.6, "auroc_macro": 0.8, "ap": {"T": 0.4}, "auroc": {"T": 0.7}}]
    mean, std = mean_std(runs)
    assert mean["map_head"] == pytest.approx(0.6) and std["map_head"] == pytest.approx(0.1414213562)
    assert mean["map_tail"] == 0.2 and std["map_tail"] == 0.0  # an undefined run is left out
    assert mean["ap"]["T"] == pytest.approx(0.3)


def test_classifier_config_names_the_key(tmp_path):
    assert ClassifierConfig().name() == "DenseNet121"
    assert TINY.name() == "DenseNet(k=4, blocks 1-1, stem 8)"
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"")
    with pytest.raises(ConfigError, match="eval.classifier.weights: .* describe another DenseNet"):
        ClassifierConfig(weights=str(weights), growth_rate=12)
    with pytest.raises(ConfigError, match="eval.classifier.weights: .*nowhere.pth does not exist"):
        ClassifierConfig(weights=str(tmp_path / "nowhere.pth"))
    with pytest.raises(ConfigError, match="eval.classifier.seeds"):
        ClassifierConfig(seeds=[])


def test_cache_images_auto_caches_only_what_fits_in_a_quarter_of_the_memory():
    from ltaug.data.image_source import cache_decision

    gib = 2**30
    # CXR-LT at 224 px: 377,110 images x 50,176 bytes = 17.6 GiB of uint8
    cache, why = cache_decision("auto", 377_110, 224, available=64 * gib)
    assert not cache and "17.62 GiB, more than 25% of the 64.0 GiB available: read from disk per batch" in why
    cache, why = cache_decision("auto", 377_110, 224, available=128 * gib)
    assert cache and "within 25% of the 128.0 GiB available: held in memory" in why
    assert cache_decision(True, 377_110, 224, available=gib)[0] and not cache_decision(False, 10, 64, available=64 * gib)[0]
    with pytest.raises(ConfigError, match=r"eval\.classifier\.cache_images: 'yes' is not one of \[True, False, 'auto'\] \(hold every image"):
        ClassifierConfig(cache_images="yes")


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_available_memory_is_capped_by_the_jobs_cgroup(tmp_path, version):
    """A SLURM job's --mem is a memory cgroup; /proc/meminfo shows the whole node."""
    from ltaug.data.image_source import available_memory

    gib = 2**30
    proc, cgroup = tmp_path / "proc", tmp_path / "cgroup"
    (proc / "self").mkdir(parents=True)
    (proc / "meminfo").write_text(f"MemTotal: {512 * gib // 1024} kB\nMemAvailable: {500 * gib // 1024} kB\n")
    assert available_memory(proc, cgroup) == 500 * gib  # no cgroup file: the node's
    job = "slurm/uid_1000/job_42"
    if version == "v2":
        (proc / "self" / "cgroup").write_text(f"0::/{job}\n")
        folder, limit, usage = cgroup / job, "memory.max", "memory.current"
    else:
        (proc / "self" / "cgroup").write_text(f"5:cpuset:/{job}\n4:memory:/{job}\n")
        folder, limit, usage = cgroup / "memory" / job, "memory.limit_in_bytes", "memory.usage_in_bytes"
    folder.mkdir(parents=True)
    (folder / limit).write_text(f"{64 * gib}\n")
    (folder / usage).write_text(f"{4 * gib}\n")
    assert available_memory(proc, cgroup) == 60 * gib  # --mem=64G, 4 GiB used
    (folder / limit).write_text("max\n" if version == "v2" else "9223372036854771712\n")  # no limit
    assert available_memory(proc, cgroup) == 500 * gib


def test_every_scheme_trains_a_row_with_a_set_added(data):
    """The stage's own path under each scheme: the set's share of the drawn rows is the scheme's (plain: its share of
    the pool; balanced and logit-adjusted: the mix's, for the tail classes' draws), and the plain and logit-adjusted
    rows of the real images alone train on the same batches, so only their loss tells them apart."""
    root, manifest, split = data
    synthetic = synthetic_set(root, manifest, split, ["train-0001"], name="mixed")
    cfg = dataclasses.replace(TINY, seeds=[0], steps=6)
    shares = {}
    for scheme in ("plain", "balanced", "logit-adjusted"):
        results, *_ = evaluate_method(f"{scheme}+set", manifest, split, [synthetic], cfg, torch.device("cpu"), scheme=scheme)
        assert results["scheme"] == scheme and results["rebalancing"]["synthetic_share"] == 0.5
        shares[scheme] = results["runs"][0]["synthetic_draw_share"]
    assert shares["plain"] == pytest.approx(4 / 44, abs=0.08)  # 4 synthetic images in a pool of 44
    assert 0 < shares["balanced"] < 0.5 and 0 < shares["logit-adjusted"] < 0.5
    plain, *_ = evaluate_method("baseline", manifest, split, None, cfg, torch.device("cpu"))
    adjusted, *_ = evaluate_method("logit-adjusted", manifest, split, None, cfg, torch.device("cpu"), scheme="logit-adjusted")
    losses = [[h["loss"] for h in r["runs"][0]["history"]] for r in (plain, adjusted)]
    assert losses[0] != losses[1] and plain["rebalancing"] is None
