"""ltaug.method.pairing: highest-confusion head class, k-nearest neighbour draws, errors, the stage on a tiny IL model."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from helpers.data import synthetic_latents, write_latent_store
from helpers.stage_models import CLASSES, SPLIT, cam_store_for, save_tiny_il

from ltaug.backbone.latents import open_latents
from ltaug.common.errors import ConfigError, InputError
from ltaug.common.seeds import rng as seeded
from ltaug.common.seeds import stream
from ltaug.data.classes import ClassSplit
from ltaug.method.cam import open_cams
from ltaug.method.checkpoint import load_il_model
from ltaug.method.pairing import COLUMNS, PairingConfig, confused_head, pair_neighbours, pair_samples, tail_draw

# columns: Cardiomegaly, Pleural Effusion (head), Nodule, Fracture (tail), No Finding
HEAD_COLUMNS = np.array([0, 1])


def test_head_of_highest_confusion_is_the_argmax_over_head_classes():
    probs = np.array([
        [0.2, 0.9, 0.99, 0.1, 0.95],  # tail and medium classes higher, but only head classes count -> column 1
        [0.7, 0.3, 0.99, 0.0, 0.00],  # -> column 0
        [0.5, 0.5, 0.90, 0.0, 0.00],  # a tie -> the first head class in classes.json order
    ])  # fmt: skip
    assert confused_head(probs, HEAD_COLUMNS).tolist() == [1, 0, 0]
    assert confused_head(probs, np.array([1, 0])).tolist() == [1, 0, 1]  # head order decides the tie


def toy():
    """10 samples in a 2-d feature space: 3 Nodule samples, head samples of both head classes."""
    labels = np.zeros((10, 5), dtype=np.uint8)
    labels[[0, 1, 2], 2] = 1  # Nodule
    labels[[3], 3] = 1  # Fracture
    labels[[4, 5, 6], 0] = 1  # Cardiomegaly
    labels[[7, 8, 9], 1] = 1  # Pleural Effusion
    labels[2, 0] = 1  # a Nodule sample that also has Cardiomegaly: never a head candidate for Nodule
    features = np.array([[0, 0], [10, 0], [0.5, 0.1], [5, 5], [1, 0], [3, 0], [9, 0], [11, 0], [20, 0], [0.2, 0]],
                        dtype=np.float32)  # fmt: skip
    probs = np.zeros((10, 5))
    probs[[0, 2, 3], 0] = 0.8  # samples 0, 2, 3 are confused with Cardiomegaly
    probs[1, 1] = 0.6  # sample 1 with Pleural Effusion
    ids = np.array([f"s{i}" for i in range(10)])
    return ids, labels, probs, lambda rows, name: features[rows]


def pair(ids, labels, probs, features, split=SPLIT, n=3, **kwargs):
    """pair_samples with 3 synthetic samples per tail class: Nodule's 3 samples once each, Fracture's one 3 times."""
    kwargs.setdefault("k", 1)
    kwargs.setdefault("seed", 0)
    return pair_samples(ids, labels, probs, features, split, n_per_class=n, **kwargs)


def test_k1_pairs_each_tail_sample_with_its_nearest_head_sample():
    ids, labels, probs, features = toy()
    pairs = pair(ids, labels, probs, features)
    assert list(pairs.columns) == COLUMNS
    nodule = pairs[pairs["tail_class"] == "Nodule"].set_index("tail_id").sort_index()
    assert nodule.index.tolist() == ["s0", "s1", "s2"]  # n_per_class = n_t: every tail sample once, in a drawn order
    assert nodule["head_class"].tolist() == ["Cardiomegaly", "Pleural Effusion", "Cardiomegaly"]
    # s0 at (0, 0): Cardiomegaly candidates s4 (1, 0), s5, s6 (s2 carries Nodule) -> s4 at distance 1
    # s1 at (10, 0): Pleural Effusion candidates s7 (11, 0), s8, s9 -> s7 at 1; s2 at (0.5, 0.1) -> s4
    assert nodule["head_id"].tolist() == ["s4", "s7", "s4"]
    assert nodule["distance"].tolist() == pytest.approx([1.0, 1.0, float(np.hypot(0.5, 0.1))])
    assert nodule["head_probability"].tolist() == pytest.approx([0.8, 0.6, 0.8])
    fracture = pairs[pairs["tail_class"] == "Fracture"]
    assert fracture["tail_id"].tolist() == ["s3"] * 3 and fracture["head_class"].tolist() == ["Cardiomegaly"] * 3
    assert fracture["j"].tolist() == [0, 1, 2]


def test_tail_samples_are_never_their_own_head_neighbours():
    ids, labels, probs, features = toy()
    for seed in range(20):
        pairs = pair(ids, labels, probs, features, k=4, seed=seed)
        nodule = pairs[pairs["tail_class"] == "Nodule"]
        assert not set(nodule["head_id"]) & {"s0", "s1", "s2"}


def test_the_neighbour_is_drawn_among_the_k_nearest_with_a_seed():
    ids, labels, probs, features = toy()
    drawn = set()
    for seed in range(12):
        pairs = pair(ids, labels, probs, features, k=2, seed=seed)
        s0 = pairs[pairs["tail_id"] == "s0"].iloc[0]
        assert s0["head_id"] in {"s4", "s5"}  # the 2 nearest Cardiomegaly candidates of s0
        drawn.add(s0["head_id"])
        again = pair(ids, labels, probs, features, k=2, seed=seed)
        pd.testing.assert_frame_equal(pairs, again)
    assert drawn == {"s4", "s5"}


def test_every_synthetic_sample_draws_a_fresh_neighbour():
    ids, labels, probs, features = toy()
    pairs = pair(ids, labels, probs, features, n=60, k=3, seed=1)
    fracture = pairs[pairs["tail_class"] == "Fracture"]  # one tail sample s3, 60 synthetic samples
    assert fracture["tail_id"].unique().tolist() == ["s3"]
    # s3 at (5, 5) is confused with Cardiomegaly: candidates s4 (1, 0), s5 (3, 0), s6 (9, 0), all 3 within k = 3
    counts = fracture["head_id"].value_counts()
    assert set(counts.index) == {"s4", "s5", "s6"} and counts.min() >= 10  # not one neighbour cycled 60 times
    nodule = pairs[pairs["tail_class"] == "Nodule"]["tail_id"].tolist()
    assert sorted(nodule[:3]) == ["s0", "s1", "s2"] and nodule == nodule[:3] * 20  # a drawn order of all 3, cycled


def test_head_neighbours_with_any_tail_class_are_skipped():
    ids, labels, probs, features = toy()
    labels[4, 3] = 1  # s4, the nearest Cardiomegaly sample of s0, also carries Fracture (another tail class)
    with_tail = {pair(ids, labels, probs, features, seed=s, exclude_tail=False).query("tail_id == 's0'")["head_id"].iloc[0]
                 for s in range(3)}  # fmt: skip
    assert with_tail == {"s4"}  # allowed when exclude_tail is off: it is not a Nodule sample
    pairs = pair(ids, labels, probs, features, n=30, k=2, seed=0)
    assert "s4" not in set(pairs["head_id"])
    assert set(pairs[pairs["tail_id"] == "s0"]["head_id"]) == {"s5", "s6"}  # the 2 nearest without a tail class


def random_training_split(n=400, d=24, seed=0):
    """n samples with continuous features (no ties): ~3 % of each tail class, head classes common."""
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, 5)) < [0.4, 0.35, 0.03, 0.03, 0.2]).astype(np.uint8)
    labels[:2, 2], labels[2:4, 3] = 1, 1  # every tail class has samples
    features = rng.normal(size=(n, d)).astype(np.float32)
    probs = rng.random((n, 5))
    return np.array([f"r{i}" for i in range(n)]), labels, probs, features


def in_memory_pairs(ids, labels, probs, features, k, seed, n, exclude_tail):
    """The pairs of an exact in-memory search (scikit-learn on every candidate at once), the same draws."""
    from ltaug.method.pairing import nearest

    classes, labels = SPLIT.classes, labels.astype(bool)
    head_columns = np.array([classes.index(h) for h in SPLIT.head])
    any_tail = labels[:, [classes.index(t) for t in SPLIT.tail]].any(axis=1)
    rng, frames = seeded(seed, stream("pairing.neighbours")), []  # the stage's neighbour stream
    for t_index, t in enumerate(SPLIT.tail):
        rows = np.flatnonzero(labels[:, classes.index(t)])
        head_col = confused_head(probs[rows], head_columns)
        sample = tail_draw(len(rows), n, seed, t_index)
        head_row, distance = np.zeros(n, dtype=np.int64), np.zeros(n)
        for h in head_columns:
            chosen = np.intersect1d(np.flatnonzero(head_col == h), sample)  # used tail samples confused with h
            if not len(chosen):
                continue
            excluded = any_tail if exclude_tail else labels[:, classes.index(t)]
            candidates = np.flatnonzero(labels[:, h] & ~excluded)
            index, dist = nearest(features[rows[chosen]], features[candidates], k)
            js = np.flatnonzero(np.isin(sample, chosen))
            where, pick = np.searchsorted(chosen, sample[js]), rng.integers(0, index.shape[1], size=len(js))
            head_row[js], distance[js] = candidates[index[where, pick]], dist[where, pick]
        frames.append(pd.DataFrame({"j": np.arange(n), "tail_id": ids[rows[sample]], "tail_class": t,
                                    "head_class": [classes[c] for c in head_col[sample]], "head_id": ids[head_row],
                                    "distance": distance, "head_probability": probs[rows[sample], head_col[sample]]}))  # fmt: skip
    return pd.concat(frames, ignore_index=True)[COLUMNS]


@pytest.mark.parametrize("exclude_tail", [True, False])
def test_the_streaming_search_equals_an_in_memory_search_for_any_chunk_size(exclude_tail):
    ids, labels, probs, features = random_training_split()
    seen = []

    def read(rows, name):  # what the stage reads: the rows asked for, never the whole split
        seen.append(len(rows))
        return features[rows]

    reference = in_memory_pairs(ids, labels, probs, features, 5, 3, 40, exclude_tail)
    for chunk in (1, 7, 128, 10_000):
        seen.clear()
        pairs = pair(ids, labels, probs, read, n=40, k=5, seed=3, exclude_tail=exclude_tail, chunk_size=chunk)
        pd.testing.assert_frame_equal(pairs, reference, check_exact=False, rtol=1e-6)  # scikit-learn: float32
        assert max(seen) <= max(chunk, int(labels[:, 2:4].sum()))  # a chunk of candidates, or the tail queries


def test_tail_class_without_samples_is_named():
    ids, labels, probs, features = toy()
    labels[3, 3] = 0
    with pytest.raises(InputError, match=r"tail class 'Fracture' has no training sample"):
        pair(ids, labels, probs, features, source="train.zarr")


def test_head_class_without_samples_is_named():
    ids, labels, probs, features = toy()
    labels[[7, 8, 9], 1] = 0
    with pytest.raises(InputError, match=r"train\.zarr: head class 'Pleural Effusion' has no training sample without "
                                         r"a tail class"):  # fmt: skip
        pair(ids, labels, probs, features, source="train.zarr")


def test_no_head_class_is_an_error():
    ids, labels, probs, features = toy()
    split = ClassSplit(CLASSES, [], ["Nodule"], [], {}, {}, {})
    with pytest.raises(InputError, match="no head class"):
        pair(ids, labels, probs, features, split)


def test_config_errors():
    with pytest.raises(ConfigError, match=r"pairing\.space: 'pixels' is not one of \['sparse', 'cam'\]"):
        PairingConfig(space="pixels")
    with pytest.raises(ConfigError, match=r"pairing\.k: 0 is less than the minimum of 1"):
        PairingConfig(k=0)


# ---------------------------------------------------------------------------- the stage


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("pairs")
    z, labels = synthetic_latents(60, [0.4, 0.3, 0.1, 0.1, 0.2], shape=(4, 8, 8), seed=3)
    latents = write_latent_store(root / "train.zarr", z, labels, CLASSES, chunk=16)
    model = save_tiny_il(root / "model.pt")
    return root, latents, model, cam_store_for(latents, model, root / "cam.zarr")


@pytest.mark.parametrize("space", ["sparse", "cam"])
def test_stage_pairs_every_tail_sample(inputs, tmp_path, space):
    root, latents, model, cams = inputs
    n = 12
    pairs = pair_neighbours(latents, cams, model, SPLIT, tmp_path / "pairs.csv", PairingConfig(space=space, k=1), n)
    assert pd.read_csv(tmp_path / "pairs.csv").columns.tolist() == COLUMNS
    store, maps = open_latents(latents), open_cams(cams)
    ids, labels, probs = store["ids"][:].tolist(), store["labels"][:], maps["probs"][:]
    row = {s: i for i, s in enumerate(ids)}
    for t_index, t in enumerate(SPLIT.tail):
        own = pairs[pairs["tail_class"] == t]
        mine = [ids[i] for i in np.flatnonzero(labels[:, CLASSES.index(t)])]
        assert own["tail_id"].tolist() == [mine[i] for i in tail_draw(len(mine), n, 0, t_index)]
        if len(mine) <= n:  # every tail sample is used
            assert set(own["tail_id"]) == set(mine)
        for tail_id, head_class in zip(own["tail_id"], own["head_class"]):
            assert head_class == SPLIT.head[int(np.argmax(probs[row[tail_id], :2]))]
    if space == "sparse":  # the distance is that between flattened z^s
        il = load_il_model(model)
        first = pairs.iloc[0]
        with torch.no_grad():
            zs = il.model.student(torch.from_numpy(store["z"].oindex[[row[first["tail_id"]], row[first["head_id"]]]]))
        assert first["distance"] == pytest.approx(float((zs[0] - zs[1]).norm()), rel=1e-4)
    else:
        first = pairs.iloc[0]
        m = maps["maps"].oindex[[row[first["tail_id"]], row[first["head_id"]]]]
        assert first["distance"] == pytest.approx(float(np.linalg.norm(m[0] - m[1])), rel=1e-4)


def test_stage_refuses_a_cam_store_of_another_il_model(inputs, tmp_path):
    root, latents, model, cams = inputs
    other = save_tiny_il(tmp_path / "other.pt", seed=5)
    with pytest.raises(InputError, match="il_fingerprint"):
        pair_neighbours(latents, cams, other, SPLIT, tmp_path / "pairs.csv", PairingConfig(), 10)
    assert not (tmp_path / "pairs.csv").exists()


def test_only_the_tail_samples_that_synthetic_samples_use_are_queries():
    """n_per_class = 2 of a class with 3 samples: a seeded draw of 2 distinct ones; the third is never a query, and
    a head class that only the unused sample is confused with is never read (memory O(n_per_class))."""
    ids, labels, probs, table = toy()
    probs[2, 0], probs[2, 1] = 0.1, 0.9  # Nodule's third sample is now confused with Pleural Effusion only
    probs[1, 1], probs[1, 0] = 0.0, 0.7  # and its second with Cardiomegaly
    seed = next(s for s in range(50) if 2 not in tail_draw(3, 2, s, 0))  # a draw that leaves s2 out
    asked = []

    def read(rows, name):
        asked.append((name, list(map(int, rows))))
        return table(rows, name)

    pairs = pair(ids, labels, probs, read, n=2, seed=seed)
    assert sorted(pairs["tail_id"].tolist()[:2]) == ["s0", "s1"] and pairs["tail_id"].tolist()[2:] == ["s3", "s3"]
    queries = [rows for name, rows in asked if name in ("Nodule", "Fracture")]
    assert queries == [[0, 1], [3]]  # the drawn Nodule samples, Fracture's only one; never s2
    assert {name for name, _ in asked} == {"Nodule", "Fracture", "Cardiomegaly"}  # Pleural Effusion is not searched
    full = in_memory_pairs(ids, labels, probs, table(np.arange(10), ""), 1, seed, 2, True)
    pd.testing.assert_frame_equal(pairs, full, check_exact=False, rtol=1e-6)


def test_tail_samples_are_a_seeded_draw_over_the_whole_class():
    # n_t <= n_per_class: every sample, floor(n / n_t) or one more times, in an order that depends on the seed
    few = tail_draw(7, 30, seed=0, t_index=0)
    assert sorted(np.bincount(few, minlength=7)) == [4, 4, 4, 4, 4, 5, 5]
    assert few.tolist() == few[:7].tolist() * 4 + few[:2].tolist()
    assert np.array_equal(few, tail_draw(7, 30, seed=0, t_index=0))  # the same for the same seed and class
    assert not np.array_equal(few, tail_draw(7, 30, seed=0, t_index=1))  # classes draw apart
    # n_t > n_per_class: n distinct samples from anywhere in the class, not the first n in store order
    many = [tail_draw(1000, 100, seed=s, t_index=0) for s in range(3)]
    assert all(len(set(m)) == 100 for m in many)
    assert all(m.max() > 500 for m in many) and len({tuple(sorted(m)) for m in many}) == 3
