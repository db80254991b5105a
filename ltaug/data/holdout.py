"""The oracle's share of real data: a seeded share of each tail class's training images, held out of every stage.

The oracle row of Table 1 adds fresh real tail images where a generator adds synthetic ones; its gain over its
scheme's real-only row is the most any generator could add. On the demo the generator draws them; on real data
they can only be training images that nothing else saw. prepare_data moves ``eval.oracle.holdout`` of each tail
class's training patients (images, without ``data.patient_column``) to split ``holdout``: no stage reads that split
(latents, iterated learning, CAMs, pairing, every baseline and every classifier train on split train), only the
oracle (:func:`ltaug.evaluation.baselines.make_oracle`). Every row thus trains on the same real images.

The tail classes are decided as split_classes decides them (:func:`ltaug.data.classes.split_classes`), on the
training images as the data set ships them, before anything is held out.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ltaug.common.errors import ConfigError
from ltaug.common.seeds import rng as seeded
from ltaug.common.seeds import stream
from ltaug.data.classes import LongTailConfig, split_classes

HOLDOUT = "holdout"  # the manifest's split of the oracle's images


def hold_out(frame: pd.DataFrame, long_tail: LongTailConfig, share: float, seed: int) -> pd.DataFrame:
    """``frame`` (prepare_data's manifest frame; ``_patient``: the patient of each row, where data.patient_column
    names one) with ``share`` of each tail class's training patients moved to split holdout, whole: every image of
    a chosen patient goes, whatever its classes. Per tail class t (in classes order), round(share x its patients)
    are drawn from a stream of (seed, stream("oracle.holdout"), t); a class must keep at least one training image
    and give at least one, else a ConfigError names it."""
    labelled = frame.drop(columns=[c for c in frame.columns if c.startswith("_")])  # where it came from: no class
    tail = split_classes(long_tail, labelled, "the training images").tail
    train = frame["split"].to_numpy() == "train"
    groups = (frame["_patient"] if "_patient" in frame.columns else frame["id"]).astype(str).to_numpy()
    chosen: set[str] = set()
    for t, name in enumerate(tail):
        patients = np.array(sorted(set(groups[train & (frame[name].to_numpy() == 1)])))
        count = int(round(share * len(patients)))
        if count < 1 or count >= len(patients):
            raise ConfigError(
                f"eval.oracle.holdout: {share} of the {len(patients)} training patients of tail class {name!r} is "
                f"{count}; the oracle needs at least one and the training split must keep one. Choose a share that "
                f"leaves both, or remove oracle from eval.methods."
            )
        rng = seeded(seed, stream("oracle.holdout"), t)
        chosen |= set(patients[rng.permutation(len(patients))[:count]])
    out = frame.copy()
    out.loc[train & np.isin(groups, list(chosen)), "split"] = HOLDOUT
    left = [name for name in tail if not ((out["split"] == "train") & (out[name] == 1)).any()]
    if left:
        raise ConfigError(
            f"eval.oracle.holdout: holding out {share} of every tail class's patients leaves tail class(es) "
            f"{', '.join(map(repr, left))} without a training image (their patients were chosen for other classes); "
            f"lower the share."
        )
    return out
