"""ltaug.common.variants: a variant's sections are the configured ones with its keys over them; names, rows, errors."""

from __future__ import annotations

import pytest

from ltaug.common.config import validate_config
from ltaug.common.errors import ConfigError
from ltaug.common.variants import display_name, expand_methods, parse_row, resolve, row_id, variant_of
from ltaug.data.classes import ClassSplit, check_class_names

PAPER = {"cam": {"method": "eigencam"}, "fusion": {"tau_h": 0.4, "tau_l": 0.4, "decode": "d"}, "generate": {"steps": [0, 5]}}


def config(**variants):
    return validate_config({"variants": variants or {"ours": {}}, "fusion": {"tau_h": 0.1, "tau_l": 0.0},
                            "cam": {"method": "layercam"}, "generate": {"steps": [0, 1, 5]}})  # fmt: skip


def test_a_variant_is_the_configured_sections_with_its_own_keys_over_them():
    variants = resolve(config(ours={}, **{"ours-paper": PAPER}))
    assert list(variants) == ["ours", "ours-paper"]
    assert variants["ours"]["fusion"]["tau_h"] == 0.1 and variants["ours"]["cam"]["method"] == "layercam"
    paper = variants["ours-paper"]
    assert (paper["fusion"]["tau_h"], paper["fusion"]["tau_l"], paper["fusion"]["decode"]) == (0.4, 0.4, "d")
    assert paper["cam"]["method"] == "eigencam" and paper["cam"]["target_layer"] == "auto"  # the shared key stays
    assert paper["fusion"]["n_per_class"] == variants["ours"]["fusion"]["n_per_class"]
    assert paper["generate"]["steps"] == [0, 5] and paper["pairing"] == variants["ours"]["pairing"]


def test_rows_come_from_each_variant_s_steps_in_the_order_of_eval_methods():
    variants = resolve(config(ours={}, **{"ours-paper": PAPER}))
    rows = expand_methods(["oracle", "resample", "roentgen", "ours-paper", "ours"], variants, 75)
    sets = ["oracle", "resample", "roentgen@75", "ours-paper@0", "ours-paper@5", "ours@0", "ours@1", "ours@5"]
    assert rows == ["baseline", *sets]
    assert [variant_of(r) for r in rows] == [None, None, None, None, "ours-paper", "ours-paper", "ours", "ours", "ours"]
    with pytest.raises(ConfigError, match=r"eval.methods: 'ours-gan' is neither a set .* the variants are ours, ours-paper"):
        expand_methods(["resample", "ours-gan"], variants, 75)


def test_every_set_is_a_row_under_every_scheme_beside_the_scheme_s_real_only_row():
    variants = resolve(config(ours={}))
    rows = expand_methods(["oracle", "ours"], variants, 75, ["plain", "balanced", "logit-adjusted"])
    assert rows == ["baseline", "oracle", "ours@0", "ours@1", "ours@5",
                    "balanced", "balanced+oracle", "balanced+ours@0", "balanced+ours@1", "balanced+ours@5",
                    "logit-adjusted", "logit-adjusted+oracle", "logit-adjusted+ours@0", "logit-adjusted+ours@1",
                    "logit-adjusted+ours@5"]  # fmt: skip
    assert [parse_row(r) for r in rows[5:8]] == [("balanced", None), ("balanced", "oracle"), ("balanced", "ours@0")]
    assert all(row_id(*parse_row(r)) == r for r in rows)
    assert [display_name(r) for r in ("balanced+ours@1", "logit-adjusted", "logit-adjusted+roentgen@10", "oracle")] == [
        "Balanced+Ours@1", "Logit-adjusted", "Logit-adjusted+RoentGen@10", "Oracle"]  # fmt: skip
    assert variant_of("balanced+ours@1") == "ours" and variant_of("balanced") is None
    for real in ("baseline", "balanced"):  # real-only rows belong to the schemes, not to eval.methods
        with pytest.raises(ConfigError, match=rf"eval.methods: '{real}' is the real-only row of a training scheme"):
            expand_methods([real, "ours"], variants, 75, ["plain", "balanced"])
    with pytest.raises(ConfigError, match="eval.schemes: 'focal' is not a training scheme"):
        expand_methods(["ours"], variants, 75, ["focal"])
    with pytest.raises(ValueError, match="unknown row 'balanced\\+gan'"):
        parse_row("balanced+gan")


def test_a_variant_may_not_change_what_every_row_shares():
    with pytest.raises(ConfigError, match=r"variants.ours-big.fusion.n_per_class: set for this variant only, but it is shared"):
        resolve(config(**{"ours-big": {"fusion": {"n_per_class": 500}}}))
    with pytest.raises(ConfigError, match=r"unknown key variants.ours-paper.cam.target_layer; the keys allowed here are: method"):
        config(**{"ours-paper": {"cam": {"target_layer": "features.1"}}})
    with pytest.raises(ConfigError, match=r"variants.ours-paper.fusion.tau_h: 1.5 is greater than the maximum of 1"):
        config(**{"ours-paper": {"fusion": {"tau_h": 1.5}}})
    with pytest.raises(ConfigError, match=r"variants: 'paper' does not match"):
        config(paper={})


def test_a_config_key_naming_a_class_is_checked_against_classes_json(tmp_path):
    split = ClassSplit(["Cardiomegaly", "Nodule"], ["Cardiomegaly"], ["Nodule"], [], {}, {}, {})
    check_class_names({"fusion.exclusive_class": ""}, split, tmp_path / "ok.json")  # "" names none
    assert (tmp_path / "ok.json").is_file()
    with pytest.raises(ConfigError, match=r"variants.ours-paper.fusion.exclusive_class: 'No Finding' is not a class of "
                                          r"classes.json \(Cardiomegaly, Nodule\); name one of them, or set it to \"\""):
        check_class_names({"variants.ours-paper.fusion.exclusive_class": "No Finding"}, split, tmp_path / "bad.json",
                          source="classes.json")  # fmt: skip
    assert not (tmp_path / "bad.json").exists()


def test_a_variant_extends_an_earlier_one():
    variants = resolve(config(**{"ours-paper": PAPER, "ours-paper-latent": {"extends": "ours-paper", "fusion": {"space": "latent"}}}))
    latent, paper = variants["ours-paper-latent"], variants["ours-paper"]
    assert latent["fusion"] == {**paper["fusion"], "space": "latent"} and latent["cam"] == paper["cam"]
    assert latent["generate"]["steps"] == [0, 5]
    with pytest.raises(ConfigError, match=r"variants.ours-a.extends: 'ours-b' is not a variant defined before it"):
        resolve(config(**{"ours-a": {"extends": "ours-b"}, "ours-b": {}}))
