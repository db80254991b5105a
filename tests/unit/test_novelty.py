"""ltaug.evaluation.novelty: copies score 0 new, far images 1; the reference distance, own sources, streaming search."""

from __future__ import annotations

import numpy as np
import pytest

from ltaug.evaluation.novelty import (
    class_novelty,
    gray_vectors,
    nearest_training,
    own_source,
    pairwise_distances,
    reference_distance,
    set_novelty,
)


def test_reference_distance_is_the_median_distance_to_the_nearest_other():
    real = np.array([[0.0, 0.0], [3.0, 0.0], [3.0, 4.0], [10.0, 0.0]])
    # nearest others: 0 -> 3 (to [3, 0]); 1 -> 3; 2 -> 4 (to [3, 0]); 3 -> 7 (to [3, 0]): median of [3, 3, 4, 7] = 3.5
    assert reference_distance(real) == pytest.approx(3.5)
    with pytest.raises(ValueError, match="at least 2 real images"):
        reference_distance(real[:1])


def test_copies_of_training_images_are_not_new_and_far_images_are():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(20, 16))
    copies = real[[3, 7, 7, 11]]
    found = class_novelty(copies, real)
    assert found["new"].tolist() == [False] * 4 and found["ratio"] == pytest.approx(np.zeros(4), abs=1e-6)
    assert found["nearest"].tolist() == [3, 7, 7, 11]
    far = real[:4] + 100.0  # far from every real image
    found = class_novelty(far, real)
    assert found["new"].all() and (found["ratio"] > 10).all()
    # a sample exactly the reference distance from its nearest real image is new (ratio 1)
    reference = reference_distance(real)
    direction = np.zeros(16)
    direction[0] = 1.0
    edge = real[5] + reference * direction
    d_other = pairwise_distances(edge[None], np.delete(real, 5, axis=0)).min()
    if d_other >= reference:  # real[5] is its nearest real image
        assert class_novelty(edge[None], real)["ratio"][0] == pytest.approx(1.0)


def test_own_source_names_the_provenance_column_of_the_nearest_training_image():
    nearest = ["t1", "h2", "x9"]
    own = own_source(nearest, {"tail_id": ["t1", "t5", "t6"], "head_id": ["h1", "h2", "h3"]})
    assert own["tail_id"].tolist() == [True, False, False] and own["head_id"].tolist() == [False, True, False]
    assert own["any"].tolist() == [True, True, False]


def test_the_streaming_search_equals_the_in_memory_one_for_any_chunk():
    rng = np.random.default_rng(1)
    train, samples = rng.normal(size=(50, 8)), rng.normal(size=(7, 8))
    want = pairwise_distances(samples, train)
    for chunk in (1, 3, 50, 64):
        chunks = ((np.arange(a, min(a + chunk, 50)), train[a : a + chunk]) for a in range(0, 50, chunk))
        distance, row = nearest_training(samples, chunks)
        assert row.tolist() == want.argmin(axis=1).tolist() and distance == pytest.approx(want.min(axis=1))


def test_a_set_of_copies_scores_zero_new_and_its_own_source_and_a_set_of_far_images_one():
    rng = np.random.default_rng(2)
    pixels = rng.integers(0, 256, size=(30, 8, 8), dtype=np.uint8)  # 30 training images, 8 x 8
    features = rng.normal(size=(30, 5))
    ids = [f"train-{i}" for i in range(30)]
    rows = {"A": np.arange(0, 10), "B": np.arange(10, 18)}  # the training rows of two tail classes
    copies = {"A": [2, 5, 5], "B": [12, 17]}  # made from these training images, as exact copies
    fake_px = {t: gray_vectors(pixels[c]) for t, c in copies.items()}
    fake_ft = {t: features[c] for t, c in copies.items()}
    sources = {t: {"tail_id": [ids[i] for i in c]} for t, c in copies.items()}
    out = set_novelty(fake_px, fake_ft, sources, rows, features, pixels, ids, chunk=7)
    for t in ("A", "B"):
        assert out[t]["pixels"]["new"] == 0.0 and out[t]["pixels"]["median_ratio"] == pytest.approx(0.0, abs=1e-6)
        assert out[t]["features"]["new"] == 0.0 and out[t]["own_source"] == 1.0
        assert out[t]["pixels"]["reference"] == pytest.approx(reference_distance(gray_vectors(pixels[rows[t]])))
    assert out["A"]["example"]["nearest_id"] in {"train-2", "train-5"}
    # far from every training image (inverted and shifted): every sample is new, and its nearest is no source
    far_px = {t: np.full_like(v, 6.0) for t, v in fake_px.items()}  # pixels are in [0, 1]
    far_ft = {t: v + 100.0 for t, v in fake_ft.items()}
    out = set_novelty(far_px, far_ft, sources, rows, features, pixels, ids)
    for t in ("A", "B"):
        assert out[t]["pixels"]["new"] == 1.0 and out[t]["features"]["new"] == 1.0 and out[t]["pixels"]["median_ratio"] > 1


def test_memory_of_the_whole_split_search_is_bounded_by_the_chunk():
    """The search over the training split reads it chunk by chunk: a reader that counts rows never sees more."""
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, size=(40, 4, 4), dtype=np.uint8)

    class Counting:
        largest = 0

        def __getitem__(self, key):
            if isinstance(key, slice):
                Counting.largest = max(Counting.largest, len(range(*key.indices(40))))
            return pixels[key]

    rows = {"A": np.arange(5)}
    set_novelty({"A": gray_vectors(pixels[[1, 2]])}, {"A": rng.normal(size=(2, 3))}, {"A": {}}, rows,
                rng.normal(size=(40, 3)), Counting(), [str(i) for i in range(40)], chunk=8)  # fmt: skip
    assert Counting.largest == 8


def test_a_class_with_one_training_image_has_no_novelty_rather_than_a_guess():
    rng = np.random.default_rng(4)
    pixels = rng.integers(0, 256, size=(6, 4, 4), dtype=np.uint8)
    out = set_novelty({"A": gray_vectors(pixels[[0]])}, {"A": rng.normal(size=(1, 3))}, {"A": {"tail_id": ["t0"]}},
                      {"A": np.array([0])}, rng.normal(size=(6, 3)), pixels, [f"t{i}" for i in range(6)])  # fmt: skip
    assert np.isnan(out["A"]["pixels"]["new"]) and np.isnan(out["A"]["features"]["median_ratio"])
    assert out["A"]["own_source"] == 1.0  # its nearest training image is still the one it copies
