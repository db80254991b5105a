"""Bootstrap intervals and paired differences of Table 1: values against scikit-learn and brute-force loops."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from ltaug.common.errors import InputError
from ltaug.data.classes import ClassSplit
from ltaug.evaluation.classifier import write_scores
from ltaug.evaluation.intervals import (
    IntervalsConfig,
    bootstrap,
    compare_methods,
    holm,
    interval,
    p_value,
    resample_counts,
    row_references,
    weighted_curves,
)


def test_resample_counts_are_seeded_draws_of_n_whatever_the_block():
    counts = np.concatenate(list(resample_counts(37, 50, seed=1, block=7)))
    assert counts.shape == (50, 37) and (counts.sum(axis=1) == 37).all() and counts.min() >= 0
    np.testing.assert_array_equal(counts, np.concatenate(list(resample_counts(37, 50, seed=1, block=100))))
    assert not np.array_equal(counts, np.concatenate(list(resample_counts(37, 50, seed=2))))


def test_weighted_ap_and_auroc_equal_sklearn_on_the_resampled_rows():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 40)
    s = np.round(rng.random(40), 1)  # many ties
    w = next(resample_counts(40, 30, seed=3))
    ap, auc = weighted_curves(y, s, w)
    for b in range(30):
        rows = np.repeat(np.arange(40), w[b])  # the resample as duplicated rows
        assert ap[b] == pytest.approx(average_precision_score(y[rows], s[rows]), abs=1e-12)
        assert auc[b] == pytest.approx(roc_auc_score(y[rows], s[rows]), abs=1e-12)
    ones = np.ones((1, 40), dtype=np.int64)
    assert weighted_curves(y, s, ones)[0][0] == pytest.approx(average_precision_score(y, s), abs=1e-12)


def test_a_resample_without_positives_or_negatives_has_no_score():
    y, s = np.array([1, 0, 0, 1]), np.array([0.9, 0.1, 0.4, 0.3])
    w = np.array([[0, 2, 2, 0], [2, 0, 0, 2], [1, 1, 1, 1]])
    ap, auc = weighted_curves(y, s, w)
    assert np.isnan(ap[0]) and np.isnan(auc[0])  # no positive drawn
    assert ap[1] == 1.0 and np.isnan(auc[1])  # positives only: AP 1, AUC undefined
    assert ap[2] == pytest.approx(average_precision_score(y, s)) and auc[2] == pytest.approx(0.75)  # 0.3 < 0.4: one pair lost
    ap, auc = weighted_curves(np.zeros(4, int), s, w)
    assert np.isnan(ap).all() and np.isnan(auc).all()


def hand_made(n=60, seed=0):
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, 4)) < [0.5, 0.4, 0.15, 0.1]).astype(np.uint8)
    labels[:2, 3] = 1  # every class has a positive
    good = labels + rng.normal(0, 0.6, labels.shape)  # a useful classifier
    poor = labels + rng.normal(0, 2.0, labels.shape)
    return labels, good[None], poor[None]


def test_bootstrap_interval_equals_a_brute_force_loop_with_sklearn():
    labels, good, _ = hand_made()
    head, tail = [0, 1], [2, 3]
    point, reps = bootstrap(labels, {"good": good}, head, tail, resamples=200, seed=5, block=64)
    brute = []
    for w in np.concatenate(list(resample_counts(len(labels), 200, seed=5))):
        rows = np.repeat(np.arange(len(labels)), w)
        aps = [average_precision_score(labels[rows, k], good[0][rows, k]) if labels[rows, k].any() else np.nan for k in tail]
        brute.append(np.nanmean(aps))
    np.testing.assert_allclose(reps["good"]["map_tail"], brute, atol=1e-12)
    lo, hi = interval(reps["good"]["map_tail"])
    assert (lo, hi) == pytest.approx(tuple(np.quantile(brute, [0.025, 0.975])), abs=1e-12)
    whole = np.mean([average_precision_score(labels[:, k], good[0][:, k]) for k in tail])
    assert point["good"]["map_tail"] == pytest.approx(whole, abs=1e-12) and lo < whole < hi


def test_identical_methods_differ_by_exactly_zero():
    labels, good, _ = hand_made()
    _, reps = bootstrap(labels, {"a": good, "b": good.copy()}, [0, 1], [2, 3], resamples=300, seed=0)
    d = reps["a"]["map_tail"] - reps["b"]["map_tail"]
    assert (d == 0).all() and interval(d) == (0.0, 0.0) and p_value(d) == 1.0


def test_a_real_difference_is_found_and_noise_is_not():
    labels, good, poor = hand_made(n=200)
    _, reps = bootstrap(labels, {"good": good, "poor": poor, "poor2": poor + 1e-9}, [0, 1], [2, 3], 500, 0)
    real = reps["good"]["map_tail"] - reps["poor"]["map_tail"]
    lo, hi = interval(real)
    assert lo > 0 and (real <= 0).sum() < 5
    assert p_value(real) == pytest.approx(2 * ((real <= 0).sum() + 1) / 501) and p_value(real) < 0.05
    same = reps["poor2"]["map_tail"] - reps["poor"]["map_tail"]
    lo, hi = interval(same)
    assert lo <= 0 <= hi and p_value(same) == 1.0


def test_seeds_that_agree_add_no_spread_and_every_method_sees_the_same_draws():
    labels, good, poor = hand_made()
    _, one = bootstrap(labels, {"m": good}, [0, 1], [2, 3], 100, 4)
    _, two = bootstrap(labels, {"m": np.concatenate([good, good])}, [0, 1], [2, 3], 100, 4)
    np.testing.assert_allclose(two["m"]["map_tail"], one["m"]["map_tail"], atol=1e-12)
    # seeds that disagree: each replicate is the mean over the seeds it draws, so it lies between them
    _, mixed = bootstrap(labels, {"m": np.concatenate([good, poor])}, [0, 1], [2, 3], 100, 4)
    _, low = bootstrap(labels, {"m": poor}, [0, 1], [2, 3], 100, 4)
    m, g, p = mixed["m"]["map_tail"], one["m"]["map_tail"], low["m"]["map_tail"]
    assert ((m >= np.minimum(g, p) - 1e-12) & (m <= np.maximum(g, p) + 1e-12)).all()
    assert len(np.unique(np.round(m, 12))) > len(np.unique(np.round((g + p) / 2, 12))) / 2


def test_p_value_and_holm_on_known_values():
    assert p_value(np.array([1.0, 2.0, 3.0])) == pytest.approx(2 * 1 / 4)
    assert p_value(np.array([-1.0, 1.0, 2.0, 3.0])) == pytest.approx(2 * 2 / 5)
    assert holm({"a": 0.01, "b": 0.04, "c": 0.03, "d": float("nan")}) == pytest.approx(
        {"a": 0.03, "b": 0.06, "c": 0.06, "d": float("nan")}, nan_ok=True
    )


SPLIT = ClassSplit(classes=["A", "B", "C", "D"], head=["A", "B"], medium=[], tail=["C", "D"],
                   train_counts={}, prevalence={}, n={})  # fmt: skip


def scores_file(path, labels, scores, ids=None):
    ids = np.asarray(ids if ids is not None else [f"t{i}" for i in range(len(labels))])
    write_scores(path, {"ids": ids, "labels": labels, "classes": np.asarray(SPLIT.classes), "seeds": np.arange(len(scores)),
                        "scores": scores})  # fmt: skip
    return path


def test_compare_methods_gives_intervals_and_paired_differences(tmp_path):
    labels, good, poor = hand_made(n=200)
    paths = {"baseline": scores_file(tmp_path / "b.npz", labels, poor), "ours@0": scores_file(tmp_path / "o.npz", labels, good)}
    out = compare_methods(paths, SPLIT, IntervalsConfig(resamples=200, references=["baseline"]))
    base, ours = out["methods"]["baseline"], out["methods"]["ours@0"]
    assert base["delta"] == {} and out["n_test"] == 200 and out["references"] == ["baseline"]
    d = ours["delta"]["baseline"]["map_tail"]
    assert d["estimate"] == pytest.approx(ours["map_tail"]["estimate"] - base["map_tail"]["estimate"])
    assert 0 < d["lo"] < d["estimate"] < d["hi"] and d["p"] < 0.05 and d["p_holm"] == d["p"]
    assert set(ours["ap"]) == set(SPLIT.classes) and ours["ap"]["C"]["lo"] <= ours["ap"]["C"]["estimate"] <= ours["ap"]["C"]["hi"]


def test_every_method_is_compared_with_every_reference_and_a_method_with_itself_differs_by_exactly_zero(tmp_path):
    labels, good, poor = hand_made(n=200)
    paths = {"baseline": scores_file(tmp_path / "b.npz", labels, poor), "resample": scores_file(tmp_path / "r.npz", labels, good),
             "smote": scores_file(tmp_path / "c.npz", labels, good), "ours@0": scores_file(tmp_path / "o.npz", labels, poor)}  # fmt: skip
    out = compare_methods(paths, SPLIT, IntervalsConfig(resamples=300, references=["baseline", "resample"]))
    methods = out["methods"]
    assert set(methods["baseline"]["delta"]) == {"resample"} and set(methods["resample"]["delta"]) == {"baseline"}
    assert set(methods["ours@0"]["delta"]) == {"baseline", "resample"}
    for key in ("map_tail", "map_head", "map_all", "auroc_macro"):  # the same scores as the reference: exactly 0
        same = methods["smote"]["delta"]["resample"][key]
        assert (same["estimate"], same["lo"], same["hi"], same["p"]) == (0.0, 0.0, 0.0, 1.0)
        same = methods["ours@0"]["delta"]["baseline"][key]
        assert (same["estimate"], same["lo"], same["hi"], same["p"]) == (0.0, 0.0, 0.0, 1.0)
    # the differences to the two references are paired on the same resamples: they differ by the references' gap
    gap = methods["resample"]["delta"]["baseline"]["map_tail"]["estimate"]
    to_base, to_resample = (methods["ours@0"]["delta"][r]["map_tail"]["estimate"] for r in ("baseline", "resample"))
    assert to_base - to_resample == pytest.approx(gap) and to_resample < 0
    assert methods["ours@0"]["delta"]["resample"]["map_tail"]["hi"] < 0  # worse than Resample, and it says so
    with pytest.raises(InputError, match=r"eval.intervals.references: \['roentgen@10'\] are not among the methods scored"):
        compare_methods(paths, SPLIT, IntervalsConfig(resamples=10, references=["roentgen@10"]))


def test_methods_scored_on_other_test_images_are_refused(tmp_path):
    labels, good, poor = hand_made()
    ids = [f"t{i}" for i in range(len(labels))]
    paths = {"baseline": scores_file(tmp_path / "b.npz", labels, poor),
             "smote": scores_file(tmp_path / "s.npz", labels, good, ids=ids[::-1])}  # fmt: skip
    with pytest.raises(InputError, match=r"s.npz: its test images differ from those of .*b.npz"):
        compare_methods(paths, SPLIT, IntervalsConfig(resamples=10))
    with pytest.raises(InputError, match=r"nowhere.npz: no test scores of 'smote' here; run evaluate_classifier"):
        compare_methods({"baseline": paths["baseline"], "smote": tmp_path / "nowhere.npz"}, SPLIT, IntervalsConfig())


def test_every_row_is_compared_with_its_scheme_s_real_only_row_and_gets_its_share_of_the_oracle_s_gain(tmp_path):
    labels, good, poor = hand_made(n=300)
    half = (good + poor) / 2  # halfway between the real-only row and the oracle on every test image
    paths = {"baseline": scores_file(tmp_path / "b.npz", labels, poor), "balanced": scores_file(tmp_path / "bb.npz", labels, poor),
             "balanced+oracle": scores_file(tmp_path / "bo.npz", labels, good),
             "balanced+ours@1": scores_file(tmp_path / "bu.npz", labels, half),
             "balanced+smote": scores_file(tmp_path / "bs.npz", labels, poor)}  # fmt: skip
    out = compare_methods(paths, SPLIT, IntervalsConfig(resamples=300, references=[]))
    assert row_references(list(paths), ["baseline", "smote"]) == {
        "baseline": {}, "balanced": {"baseline": "baseline", "smote": "balanced+smote"},  # no plain SMOTE row here
        "balanced+oracle": {"own": "balanced", "baseline": "baseline", "smote": "balanced+smote"},
        "balanced+ours@1": {"own": "balanced", "baseline": "baseline", "smote": "balanced+smote"},
        "balanced+smote": {"own": "balanced", "baseline": "baseline"}}  # fmt: skip
    methods = out["methods"]
    assert set(methods["balanced+ours@1"]["delta"]) == {"balanced"} and methods["balanced"]["delta"] == {}
    assert methods["balanced+ours@1"]["references"] == {"own": "balanced"}
    # a set named alone is that set in the row's own scheme: Balanced+Ours@1 against Balanced+SMOTE, not SMOTE
    relative = compare_methods(paths, SPLIT, IntervalsConfig(resamples=50, references=["smote"]))["methods"]
    assert relative["balanced+ours@1"]["references"] == {"own": "balanced", "smote": "balanced+smote"}
    d = relative["balanced+ours@1"]["delta"]["balanced+smote"]["map_tail"]
    assert d["estimate"] == pytest.approx(relative["balanced+ours@1"]["map_tail"]["estimate"] - relative["balanced+smote"]["map_tail"]["estimate"])
    share = methods["balanced+ours@1"]["oracle_share"]
    gain = methods["balanced+ours@1"]["delta"]["balanced"]["map_tail"]["estimate"]
    room = methods["balanced+oracle"]["delta"]["balanced"]["map_tail"]["estimate"]
    assert share["estimate"] == pytest.approx(gain / room) and share["oracle_gain"] == pytest.approx(room)
    assert 0 < share["lo"] < share["estimate"] < share["hi"] < 1 and share["defined"]
    nothing = methods["balanced+smote"]["oracle_share"]  # the real-only row's scores: no gain at all
    assert (nothing["estimate"], nothing["lo"], nothing["hi"]) == (0.0, 0.0, 0.0)
    assert all("oracle_share" not in methods[m] for m in ("baseline", "balanced", "balanced+oracle"))
    # an oracle that gains nothing makes every share undefined, and the result says so
    paths["balanced+oracle"] = scores_file(tmp_path / "bo2.npz", labels, poor + 1e-9 * np.arange(poor.size).reshape(poor.shape))
    assert not compare_methods(paths, SPLIT, IntervalsConfig(resamples=100, references=[]))["methods"]["balanced+ours@1"]["oracle_share"]["defined"]
