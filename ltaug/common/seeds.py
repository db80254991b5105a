"""Per-sample seeds: one derivation, so that a sample's random draws depend on its identity, never on batching.

A sample is named by integer words, e.g. (fusion.seed, tail class index, j) or (generate.seed, row);
numpy's SeedSequence hashes them into independent streams (it ignores trailing zeros, so streams that could
end in 0 carry a non-zero tag word). :func:`seed64` gives the 64-bit seed a torch.Generator takes, on any
device; :func:`rng` a numpy generator of the same words.
"""

from __future__ import annotations

import numpy as np


def seed64(*words: int) -> int:
    """The 64-bit seed of the sample named by ``words``: SeedSequence(words)'s first two 32-bit words, high first."""
    state = np.random.SeedSequence([int(w) for w in words]).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 32 | int(state[1])


def rng(*words: int) -> np.random.Generator:
    """A numpy generator of the sample (or stream) named by ``words``."""
    return np.random.default_rng([int(w) for w in words])
