"""Per-sample seeds: one derivation, so that a sample's random draws depend on its identity, never on batching.

A sample is named by integer words: its config seed, the tag of the stream it belongs to, then its place,
e.g. (fusion.seed, stream("fuse.coins"), tail class index, j) or (generate.seed, stream("generate.noise"), row).
numpy's SeedSequence hashes them into independent streams. The tag (:func:`stream`, the crc32 of a name) keeps
two stages apart when their config seeds are equal (every seed of config.yaml is 0), and it matters because
SeedSequence ignores trailing zeros: without it (0, t, 0) and (0, t) would be the same draw. Within one stream
every sample has the same number of words. :func:`seed64` gives the 64-bit seed a torch.Generator takes, on any
device; :func:`rng` a numpy generator of the same words.
"""

from __future__ import annotations

import zlib

import numpy as np


def stream(name: str) -> int:
    """The tag word of the stream called ``name`` (e.g. "train_il", "fuse.coins"): crc32 of its UTF-8 bytes."""
    return zlib.crc32(name.encode())


def seed64(*words: int) -> int:
    """The 64-bit seed of the sample named by ``words``: SeedSequence(words)'s first two 32-bit words, high first."""
    state = np.random.SeedSequence([int(w) for w in words]).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 32 | int(state[1])


def rng(*words: int) -> np.random.Generator:
    """A numpy generator of the sample (or stream) named by ``words``."""
    return np.random.default_rng([int(w) for w in words])


def draw_seed(seed: int, draw: int) -> int:
    """The config seed of draw ``draw`` of a synthetic set, which its stages take in place of the configured ``seed``:
    draw 0 is ``seed`` itself (a set of one draw is what it always was), draw d > 0 a 31-bit seed of (seed,
    stream("synthetic.draw"), d), so that draws of one seed never meet another seed's (31 bits: numpy's RandomState,
    which SMOTE's draws follow, takes seeds below 2**32, and SMOTE adds the tail class's index)."""
    return int(seed) if draw == 0 else seed64(seed, stream("synthetic.draw"), draw) >> 33
