"""Per-sample seeds (ltaug.common.seeds): one derivation, its values pinned, streams apart."""

from __future__ import annotations

import numpy as np

from ltaug.common.seeds import rng, seed64


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
