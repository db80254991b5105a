"""The command line (python -m ltaug STAGE): every stage's options, the config section it reads, and bad input as one message and exit status 1."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
from helpers.data import REPO

from ltaug import cli_eval, cli_method
from ltaug.cli import (
    Input,
    Option,
    Output,
    Param,
    Stage,
    Wildcard,
    prepare,
    shard_options,
    stage,
    stage_command as command_of,
    stages,
)
from ltaug.commands import STAGES, build_parser, main, stage_command
from ltaug.method.fusion import FusionConfig


def test_cli_reports_error_without_traceback(dataset, tmp_path, capsys):
    Path(dataset["labels"]["train"]).unlink()
    status = main(["prepare_data", "--manifest", str(tmp_path / "m.csv"), "--params", json.dumps(dataset)])
    err = capsys.readouterr().err
    assert status == 1
    assert "error in stage prepare_data:" in err and "data.labels.train" in err and "Traceback" not in err
    assert not (tmp_path / "m.csv").exists()


def test_cli_rejects_unknown_key(dataset, tmp_path, capsys):
    status = main(["prepare_data", "--manifest", str(tmp_path / "m.csv"), "--params", json.dumps({**dataset, "imageroot": "x"})])
    assert status == 1 and "data.imageroot: unknown key" in capsys.readouterr().err


# ---------------------------------------------------------------------------- one declaration per stage


def test_an_option_becomes_a_flag_and_a_rule_value():
    assert Input("n_per_class", "h").flag_name == "--n-per-class"
    assert Input("latents", "h").command() == "--latents={input.latents:q}"
    assert Output("store", "h").command() == "--store={output.store:q}"
    assert Param("cfg_x", "h").command() == "--cfg-x={params.cfg_x:q}"
    assert Wildcard("split", "h").command() == "--split={wildcards.split:q}"
    assert Input("shards", "h", many=True).command() == "--shards {input.shards:q}"
    assert Option("method", "h", "{wildcards.v}@{wildcards.s}").command() == "--method={wildcards.v}@{wildcards.s}"


def test_the_rule_command_follows_from_the_declaration():
    toy = stage("toy", "a toy stage", Input("latents", "h"), Output("store", "h"),
                Param("n", "h", type=int), *shard_options("map", "mapped", "cam.shards"),
                Option("resume", "h", None, flag=True), section=("cam", "ltaug.method.cam:CamConfig"),
                torch=True, runtime=True, reads_images=True)(lambda job: None)  # fmt: skip
    declared = stages(toy)
    assert command_of("toy", declared) == (
        "python -m ltaug toy --latents={input.latents:q} --store={output.store:q} --n={params.n:q}"
        " --shard={wildcards.shard:q} --shards={params.shards:q} --params={params.cfg:q}"
        " --diffusion={params.diffusion:q} --window={params.window:q} --threads={threads} > {log} 2>&1"
    )
    assert "--shard" not in command_of("toy", declared, omit=("shard", "shards"))
    with pytest.raises(ValueError, match="no option"):
        command_of("toy", declared, omit=("shardz",))


def test_a_stage_declared_twice_or_with_an_option_twice_is_refused():
    toy = stage("toy", "h")(lambda job: None)
    with pytest.raises(ValueError, match="stage toy is declared twice"):
        stages(toy, toy)
    with pytest.raises(ValueError, match="option twice"):
        stage("toy2", "h", Input("a", "h"), Output("a", "h"))(lambda job: None)


@pytest.mark.parametrize("module", [cli_method, cli_eval])
def test_every_stage_a_module_declares_is_in_its_list(module):
    declared = {v.name for v in vars(module).values() if isinstance(v, Stage)}
    assert declared == set(module.STAGES)
    assert list(STAGES) == [*cli_method.STAGES, *cli_eval.STAGES]


def _filled(command: str) -> list[str]:
    """The rule command of a stage with every placeholder replaced by a value of its kind."""
    body = command.split(" > {log}")[0]
    body = re.sub(r"\{threads\}", "2", body)
    body = re.sub(r"\{params\.(cfg|diffusion)(:q)?\}", "{}", body)
    body = re.sub(r"\{params\.window(:q)?\}", "null", body)
    body = re.sub(r"\{wildcards\.split(:q)?\}", "train", body)
    body = re.sub(r"\{[a-z]+\.[a-z_]+(:q)?\}", "1", body)  # ints, paths, names alike
    return shlex.split(body)[4:]


@pytest.mark.parametrize("name", sorted(STAGES))
def test_every_rule_command_parses_with_its_stage_options(name):
    args = build_parser().parse_args([name, *_filled(stage_command(name))])
    s = STAGES[name]
    for option in s.options:
        if option.rule:  # every value the rule passes reaches its option
            assert getattr(args, option.name) in ("1", 1, ["1"], "train", "1@1"), option.name
    assert hasattr(args, "threads") == s.threads and hasattr(args, "params") == (s.section is not None)


def _rule_blocks():
    for smk in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        for block in re.split(r"(?m)^(?=\s*rule \w+:)", smk.read_text()):
            rule = re.match(r"\s*rule (\w+):", block)
            if rule:
                yield smk.name, rule[1], block


def test_every_rule_runs_its_stage_through_the_declaration_and_names_the_fields_it_reads():
    ran = set()
    for smk, rule, block in _rule_blocks():
        assert "python -m ltaug" not in block, f"{smk}: rule {rule} writes its command by hand; use stage_command"
        call = re.search(r'stage_command\("(\w+)"(?:, omit=\(([^)]*)\))?\)', block)
        if not call:
            continue
        ran.add(call[1])
        omit = tuple(re.findall(r'"(\w+)"', call[2] or ""))
        for kind, field in re.findall(r"\{(input|output|params|wildcards)\.(\w+)", stage_command(call[1], omit)):
            if kind == "wildcards":
                assert "{" + field + "}" in block or "{{" + field + "}}" in block, (smk, rule, field)
            else:
                section = re.search(rf"(?ms)^\s*{kind}:\n(.*?)(?=^\s*\w+:\s*$|^\s*\w+:\s*\S|\Z)", block)
                assert section and re.search(rf"(?m)^\s*{field}=|unpack\(", section[1]), (smk, rule, f"{kind}.{field}")
    assert ran == set(STAGES)


def test_threads_come_from_the_section_when_it_sets_them_else_from_the_command_line():
    import torch

    before = torch.get_num_threads()
    try:
        job = prepare(STAGES["real_features"], build_parser().parse_args(
            ["real_features", *_filled(stage_command("real_features")), "--threads", "1"]))  # fmt: skip
        assert job.cfg.threads == 1 and torch.get_num_threads() == 1 and str(job.runtime.device) == "cpu"
        params = json.dumps({"threads": 3})
        job = prepare(STAGES["real_features"], build_parser().parse_args(
            ["real_features", *_filled(stage_command("real_features")), "--threads", "1", "--params", params]))  # fmt: skip
        assert job.cfg.threads == 3 and torch.get_num_threads() == 3
        job = prepare(STAGES["fuse"], build_parser().parse_args(["fuse", *_filled(stage_command("fuse")), "--threads", "2"]))
        assert torch.get_num_threads() == 2 and job.runtime is None and job.cfg.tau_h == FusionConfig().tau_h
    finally:
        torch.set_num_threads(before)


def test_an_option_can_set_a_key_of_the_section():
    args = build_parser().parse_args(["generate", *_filled(stage_command("generate")), "--steps", "5"])
    job = prepare(STAGES["generate"], args)
    assert job.cfg.steps == [5] and args.steps == 5


def test_bad_params_json_names_the_section(tmp_path, capsys):
    status = main(["fuse", *_filled(stage_command("fuse")), "--params", "{not json"])
    assert status == 1 and "error in stage fuse: fusion: --params is not valid JSON" in capsys.readouterr().err
