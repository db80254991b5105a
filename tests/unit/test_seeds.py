"""Per-sample seeds (ltaug.common.seeds): one derivation, its values pinned, streams apart."""

from __future__ import annotations

import numpy as np

import ast
import zlib
from pathlib import Path

from ltaug.common.seeds import rng, seed64, stream

PACKAGE = Path(__file__).resolve().parents[2] / "ltaug"


def test_seed64_is_the_seed_sequence_s_first_two_words_high_first():
    state = np.random.SeedSequence([7, 3]).generate_state(2, dtype=np.uint32)
    assert seed64(7, 3) == int(state[0]) * 2**32 + int(state[1])
    assert 0 <= seed64(0, 0) < 2**64


def test_every_sample_gets_its_own_seed_and_the_same_one_again():
    seeds = {seed64(0, t, j) for t in range(4) for j in range(250)}
    assert len(seeds) == 1000
    assert seed64(0, 2, 17) == seed64(0, 2, 17) != seed64(1, 2, 17)


def test_rng_draws_what_numpy_draws_from_the_same_words():
    assert np.array_equal(rng(5, 1, 2).standard_normal(4), np.random.default_rng([5, 1, 2]).standard_normal(4))
    assert not np.array_equal(rng(5, 1, 2).standard_normal(4), rng(5, 2, 1).standard_normal(4))


def test_a_stream_tag_is_the_crc32_of_its_name():
    assert stream("fuse.coins") == zlib.crc32(b"fuse.coins") == 0x8B137764
    assert stream("fuse.coins") != stream("generate.noise")


def test_without_a_tag_trailing_zeros_would_merge_two_samples_and_with_it_they_stay_apart():
    assert seed64(0, 3, 0) == seed64(0, 3)  # why every stream carries its tag: SeedSequence drops trailing zeros
    coins = {seed64(0, stream("fuse.coins"), t, j) for t in range(4) for j in range(250)}
    noise = {seed64(0, stream("generate.noise"), i) for i in range(1000)}
    text = {seed64(0, stream("baseline_roentgen.noise"), t, j) for t in range(4) for j in range(250)}
    il = {seed64(0, stream("train_il"), g, part) for g in range(8) for part in range(1, 5)}
    assert len(coins | noise | text | il) == len(coins) + len(noise) + len(text) + len(il) == 3032


def test_every_stream_name_is_used_by_one_module_and_the_tags_are_distinct():
    users: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):  # calls only: docstrings may name a stream
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "stream" and node.args:
                users.setdefault(node.args[0].value, set()).add(str(path.relative_to(PACKAGE)))
    assert {"train_il", "fuse.coins", "generate.noise", "baseline_roentgen.noise", "pairing.tail"} <= set(users)
    assert {name: paths for name, paths in users.items() if len(paths) > 1} == {}
    assert len({stream(name) for name in users}) == len(users)
