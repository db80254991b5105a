"""The oracle's held-out share of real data: whole patients of each tail class moved to split holdout, seeded."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ltaug.common.errors import ConfigError
from ltaug.data.classes import LongTailConfig, split_classes
from ltaug.data.holdout import hold_out

LONG_TAIL = LongTailConfig(head_min_prevalence=0.3, tail_max_prevalence=0.1)


def frame(n=200, seed=0):
    """A manifest frame of n training images (two per patient) and 20 test images: one head, two tail classes."""
    rng = np.random.default_rng(seed)
    rows = {"id": [f"i{k}" for k in range(n + 20)], "path": "x.png", "split": ["train"] * n + ["test"] * 20}
    out = pd.DataFrame(rows)
    out["Head"] = (rng.random(n + 20) < 0.5).astype(np.uint8)
    out["Tail A"] = 0
    out["Tail B"] = 0
    out.loc[[2 * p for p in range(12)] + [201], "Tail A"] = 1  # 12 patients of A in train (one image each), one in test
    out.loc[[2 * p + 1 for p in range(10, 18)], "Tail B"] = 1  # 8 patients of B, 2 of them with A too (patients 10, 11)
    out["_patient"] = [f"p{k // 2}" for k in range(n + 20)]
    return out


def test_a_share_of_each_tail_class_s_patients_leaves_the_training_split_whole():
    before = frame()
    assert split_classes(LONG_TAIL, before.drop(columns="_patient")).tail == ["Tail A", "Tail B"]
    after = hold_out(before, LONG_TAIL, 0.25, seed=3)
    held = after[after["split"] == "holdout"]
    patients = set(held["_patient"])
    assert set(after.loc[after["_patient"].isin(patients), "split"]) == {"holdout"}  # every image of a chosen patient
    assert (after.loc[before["split"] == "test", "split"] == "test").all()  # other splits untouched
    for name, n in (("Tail A", 12), ("Tail B", 8)):
        assert held[name].sum() >= round(0.25 * n)  # at least its own share (a patient can carry both classes)
        assert ((after["split"] == "train") & (after[name] == 1)).sum() >= 1
    np.testing.assert_array_equal(hold_out(before, LONG_TAIL, 0.25, seed=3)["split"], after["split"])
    assert not hold_out(before, LONG_TAIL, 0.25, seed=4)["split"].equals(after["split"])
    assert before["split"].isin(["train", "test"]).all()  # the input is left alone


def test_images_without_a_patient_column_are_held_out_one_by_one():
    after = hold_out(frame().drop(columns="_patient"), LONG_TAIL, 0.25, seed=0)
    held = after[after["split"] == "holdout"]
    assert held["Tail A"].sum() >= 3 and held["Tail B"].sum() >= 2 and len(held) <= 5


def test_a_share_that_leaves_a_class_without_training_or_held_out_images_is_refused():
    with pytest.raises(ConfigError, match=r"eval.oracle.holdout: 0.01 of the 12 training patients of tail class 'Tail A' is 0"):
        hold_out(frame(), LONG_TAIL, 0.01, seed=0)
    with pytest.raises(ConfigError, match=r"eval.oracle.holdout: 0.95 of the 8 training patients of tail class 'Tail B' is 8"):
        hold_out(frame(), LONG_TAIL, 0.95, seed=0)


def test_the_classes_are_split_on_the_training_images_as_shipped():
    after = hold_out(frame(), LONG_TAIL, 0.25, seed=3)
    split = split_classes(LONG_TAIL, after.drop(columns="_patient"))
    shipped = split_classes(LONG_TAIL, frame().drop(columns="_patient"))
    assert split.prevalence == shipped.prevalence and split.tail == shipped.tail
    assert split.train_counts["Tail A"] == ((after["split"] == "train") & (after["Tail A"] == 1)).sum()
    assert split.n["holdout"] == (after["split"] == "holdout").sum()
