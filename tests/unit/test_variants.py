"""ltaug.common.variants: a variant's sections are the configured ones with its keys over them; names, rows, errors."""

from __future__ import annotations

import pytest

from ltaug.common.config import validate_config
from ltaug.common.errors import ConfigError
from ltaug.common.variants import expand_methods, resolve, variant_of
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
    rows = expand_methods(["baseline", "resample", "roentgen", "ours-paper", "ours"], variants, 75)
    assert rows == ["baseline", "resample", "roentgen@75", "ours-paper@0", "ours-paper@5", "ours@0", "ours@1", "ours@5"]
    assert [variant_of(r) for r in rows] == [None, None, None, "ours-paper", "ours-paper", "ours", "ours", "ours"]
    with pytest.raises(ConfigError, match=r"eval.methods: 'ours-gan' is neither a baseline .* the variants are ours, ours-paper"):
        expand_methods(["baseline", "ours-gan"], variants, 75)


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
