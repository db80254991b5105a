"""The fair fight in figures: every synthetic set on top of re-balancing, against its scheme's oracle, from finished runs.

    python benchmarks/fair_fight.py RUN [RUN ...] [--widths ROW ...] [--out benchmarks/fair_fight]

RUN is the directory of a finished `make demo` (results/report/table1.csv, results/eval/*, the fused stores and
Snakemake's benchmark files). For each run it gathers, from those files only:

- each scheme's real-only row and its oracle's gain over it, with the interval, and whether the oracle gains at all;
- every set under every scheme: tail mAP, Δ tail and head mAP against the scheme's real-only row and its share of the
  oracle's gain, each with its 95 % interval; how new (pixels / judge) and faithful (detector, its false-positive
  rate on synthetic negatives) the set is, the oracle's fresh images among them;
- what the label policy changed: per variant, the share of draw 0's fused samples whose tail image holds a class
  that neither the head neighbour nor the tail class gives them (the classes the paper's union label would add);
- the cost: Snakemake's seconds per rule, summed over the classifier jobs of each scheme and over each draw's sets.

``--widths ROW ...`` also trains the given rows of the first run again with draw 0 of their set for every seed
(eval.draw_per_seed false; the run's own classifier settings, on ``--threads`` torch threads as the run's jobs: the
thread count changes a training's numerics, and so its result) and compares the widths of their intervals with
the run's, where seed i trained with draw i; seed 0, trained with draw 0 both times, must come out as the run's.
Writes summary.json and summary.md to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from evaluate_times import rule_times  # benchmarks/evaluate_times.py: every rule's benchmark file of a run

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def load_config(run: Path) -> dict:
    from ltaug.common.config import validate_config

    return validate_config(yaml.safe_load((run / "config.yaml").read_text()))


def ci(row: pd.Series, key: str, digits: int = 3, sign: bool = False) -> str:
    f = f"+.{digits}f" if sign else f".{digits}f"
    value = row.get(key)
    if value is None or pd.isna(value):
        return "–"
    return f"{value:{f}} [{row[key + '_lo']:{f}}, {row[key + '_hi']:{f}}]"


def label_change(run: Path, variants: dict, classes: list[str]) -> dict:
    """Per variant with a region mask: the share of draw 0's fused samples to which the union of both images'
    labels would add a class that neither the neighbour nor the tail class gives (the tail image's other findings),
    and the share that would claim a second tail class."""
    from ltaug.backbone.latents import open_latents

    split = json.loads((run / "results/data/classes.json").read_text())
    out = {}
    for name, sections in variants.items():
        store = run / f"results/fused/{name}/draw0/latents.zarr"
        if not store.exists():
            continue
        fused = open_latents(store)
        labels, tail_labels = fused["labels"][:], fused["tail_labels"][:]
        made_for = np.array([classes.index(str(t)) for t in fused["tail_class"][:]])
        other = tail_labels.copy()
        other[np.arange(len(other)), made_for] = 0
        if "No Finding" in classes:
            other[:, classes.index("No Finding")] = 0
        added = (other == 1) & (labels == 0)  # (N, K): a class of the tail image the sample's label does not claim
        tails = [classes.index(t) for t in split["tail"]]
        out[name] = {"policy": fused.attrs.get("label_policy"), "tail_mask": sections["fusion"]["tail_mask"],
                     "samples": int(len(labels)), "union_would_add": round(float(added.any(axis=1).mean()), 3),
                     "union_would_add_a_tail_class": round(float(added[:, tails].any(axis=1).mean()), 3)}  # fmt: skip
    return out


def costs(run: Path) -> dict:
    """Snakemake's wall seconds: every classifier job per scheme, every set job per draw, the whole run's rules."""
    from ltaug.common.variants import parse_row

    table = rule_times(run).rename(columns={"wall_s": "s"})
    out = {"all_rules_s": round(table["s"].sum(), 1)}
    classifier = table[table["rule"].str.startswith("evaluate_classifier_")]
    schemes = classifier["rule"].str.removeprefix("evaluate_classifier_").map(lambda r: parse_row(r)[0])
    out["evaluate_classifier_s"] = {s: round(classifier.loc[schemes == s, "s"].sum(), 1) for s in schemes.unique()}
    out["evaluate_classifier_jobs"] = {s: int((schemes == s).sum()) for s in schemes.unique()}
    draws = table["rule"].str.extract(r"_draw(\d+)$")[0].dropna()
    out["set_jobs_s_per_draw"] = {f"draw{d}": round(table.loc[draws.index[draws == d], "s"].sum(), 1)
                                  for d in sorted(draws.unique())}  # fmt: skip
    return out


def summarise(run: Path) -> dict:
    from ltaug.common.variants import SCHEME_NAMES, resolve, row_id, set_name

    config = load_config(run)
    table = pd.read_csv(run / "results/report/table1.csv")
    classes = json.loads((run / "results/data/classes.json").read_text())["classes"]
    out = {"run": str(run), "demo_seed": config["demo"]["seed"], "schemes": {}, "sets": {}}
    for scheme in config["eval"]["schemes"]:
        real = table[table["method"] == row_id(scheme, None)].iloc[0]
        oracle = table[table["method"] == row_id(scheme, "oracle")]
        entry = {"real_only": ci(real, "tail_map")}
        if len(oracle):
            o = oracle.iloc[0]
            entry["oracle"] = ci(o, "tail_map")
            entry["oracle_gain"] = ci(o, "delta_tail_map_own", sign=True)
            entry["oracle_gains"] = bool(o["delta_tail_map_own_lo"] > 0)
        entry["rows"] = {}
        for r in table[(table["scheme"] == scheme) & table["set"].notna()].itertuples():
            r = table.loc[r.Index]
            entry["rows"][r["row"]] = {"tail_map": ci(r, "tail_map"), "delta_tail": ci(r, "delta_tail_map_own", sign=True),
                                       "delta_head": ci(r, "delta_head_map_own", sign=True),
                                       "oracle_share": ci(r, "oracle_share", 2)}  # fmt: skip
        out["schemes"][SCHEME_NAMES[scheme] or "Plain"] = entry
    for r in table[table["set"].notna()].drop_duplicates("set").itertuples():
        r = table.loc[r.Index]
        out["sets"][set_name(r["set"])] = {
            "new_pixels": None if pd.isna(r["novelty_pixels_new"]) else round(r["novelty_pixels_new"], 2),
            "new_judge": None if pd.isna(r["novelty_features_new"]) else round(r["novelty_features_new"], 2),
            "detector": ci(r, "tail_detector_fidelity"),
            "fpr_synthetic": None if pd.isna(r["detector_fpr_synthetic"]) else round(r["detector_fpr_synthetic"], 3),
        }
    listed = {v: s for v, s in resolve(config).items() if v in config["eval"]["methods"]}
    out["labels"] = label_change(run, listed, classes)
    out["costs"] = costs(run)
    log = run.parent / f"{run.name}.log"
    if log.exists():  # `time make demo` printed "real XmY.Zs" at its end
        match = re.search(r"real\s+(\d+)m([\d.]+)s", log.read_text())
        out["make_demo_s"] = round(int(match[1]) * 60 + float(match[2]), 1) if match else None
    return out


def widths(run: Path, rows: list[str], threads: int = 1) -> dict:
    """The rows trained again with draw 0 for every seed, and the widths of their tail mAP intervals and of their
    Δ to the scheme's real-only row, beside the run's (seed i with draw i), on the same bootstrap resamples."""
    import torch

    from ltaug.common.config import from_dict
    from ltaug.common.variants import parse_row, row_id
    from ltaug.data.classes import read_classes
    from ltaug.data.image_store import ImageStores
    from ltaug.data.manifest import read_manifest
    from ltaug.data.synthetic import read_synthetic_set
    from ltaug.evaluation.classifier import ClassifierConfig, evaluate_method
    from ltaug.evaluation.intervals import bootstrap, interval, read_scores
    from ltaug.evaluation.schemes import RebalancingConfig

    os.chdir(run)  # the manifest's paths are relative to the run
    config = load_config(run)
    results = run / config["outdir"]
    split = read_classes(results / "data/classes.json")
    manifest = read_manifest(results / "data/manifest.csv")
    cfg = from_dict(ClassifierConfig, {**config["eval"]["classifier"], "threads": threads}, "eval.classifier")
    torch.set_num_threads(threads)  # as the run trained them (make demo: one core a job): a thread count is a numeric
    rebalancing = RebalancingConfig(**config["eval"]["rebalancing"])
    references = {row_id(parse_row(r)[0], None) for r in rows}
    paths = {m: results / f"eval/classifier/{m}.scores.npz" for m in [*references, *rows]}
    _, labels, classes, _, per_draw = read_scores(paths)
    one_draw, same = {}, {}
    for row in rows:
        scheme, synthetic = parse_row(row)
        draw0 = read_synthetic_set(results / "synthetic" / synthetic / "draw0", split.classes, split.tail)
        _, _, _, scores = evaluate_method(row, manifest, split, [draw0], cfg, torch.device("cpu"), ImageStores(results / "images"),
                                          scheme=scheme, rebalancing=rebalancing)  # fmt: skip
        one_draw[row] = scores["scores"]
        same[row] = bool(np.array_equal(scores["scores"][0], per_draw[row][0]))  # seed 0: draw 0 both times
    head = [classes.index(c) for c in split.head]
    tail = [classes.index(c) for c in split.tail]
    iv = config["eval"]["intervals"]
    out = {}
    for name, scores in (("a draw per seed", per_draw), ("draw 0 for every seed", {**per_draw, **one_draw})):
        point, reps = bootstrap(labels, scores, head, tail, iv["resamples"], iv["seed"], iv["block"])
        for row in rows:
            real = row_id(parse_row(row)[0], None)
            lo, hi = interval(reps[row]["map_tail"], iv["level"])
            dlo, dhi = interval(reps[row]["map_tail"] - reps[real]["map_tail"], iv["level"])
            out.setdefault(row, {"seed0_as_the_run": same[row]})[name] = {"tail_map": round(float(point[row]["map_tail"]), 3),
                                             "tail_map_width": round(float(hi - lo), 3),
                                             "delta_width": round(float(dhi - dlo), 3),
                                             "delta": round(float(point[row]["map_tail"] - point[real]["map_tail"]), 3)}  # fmt: skip
    return out


def markdown(summaries: list[dict], width: dict | None) -> str:
    lines = []
    for s in summaries:
        lines.append(f"## demo seed {s['demo_seed']} ({s['run']}; make demo {s.get('make_demo_s')} s)\n")
        for scheme, e in s["schemes"].items():
            gain = f"; oracle {e.get('oracle')}, its gain {e.get('oracle_gain')} ({'gains' if e.get('oracle_gains') else 'gains nothing'})"
            lines.append(f"**{scheme}**: real-only {e['real_only']}{gain if 'oracle' in e else ''}\n")
            lines.append("| row | tail mAP | Δ tail vs real-only | Δ head vs real-only | share of the oracle's gain |")
            lines.append("|---|---|---|---|---|")
            for row, r in e["rows"].items():
                lines.append(f"| {row} | {r['tail_map']} | {r['delta_tail']} | {r['delta_head']} | {r['oracle_share']} |")
            lines.append("")
        lines.append("| set | new (pixels / judge) | detector | FPR, synthetic |\n|---|---|---|---|")
        for name, r in s["sets"].items():
            lines.append(f"| {name} | {r['new_pixels']} / {r['new_judge']} | {r['detector']} | {r['fpr_synthetic']} |")
        lines.append("")
        for v, r in s["labels"].items():
            lines.append(f"- labels of {v} ({r['tail_mask']} mask, policy {r['policy']}): the union would add a class to "
                         f"{r['union_would_add']:.1%} of its {r['samples']} samples, a second tail class to "
                         f"{r['union_would_add_a_tail_class']:.1%}")  # fmt: skip
        lines.append(f"- costs: {json.dumps(s['costs'])}\n")
    if width:
        lines.append("| row | draws | tail mAP | interval width | Δ vs real-only | its interval width |\n|---|---|---|---|---|---|")
        for row, e in width.items():
            for name, r in e.items():
                if name == "seed0_as_the_run":
                    continue
                lines.append(f"| {row} | {name} | {r['tail_map']} | {r['tail_map_width']} | {r['delta']:+.3f} | {r['delta_width']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="directories of finished demo runs")
    parser.add_argument("--widths", nargs="*", default=[], help="rows of the first run to train again with one draw")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the --widths trainings (make demo's: 1)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "fair_fight"), help="directory of summary.json/.md")
    args = parser.parse_args()
    runs = [Path(r).resolve() for r in args.runs]
    out = Path(args.out).resolve()  # before widths() changes to the run's directory
    summaries = [summarise(r) for r in runs]
    width = widths(runs[0], args.widths, args.threads) if args.widths else None
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps({"runs": summaries, "widths": width}, indent=1) + "\n")
    text = markdown(summaries, width)
    (out / "summary.md").write_text(text)
    print(text)


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
