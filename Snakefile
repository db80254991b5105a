"""ltaug: long-tail image generation through feature-space augmentation and iterated learning.

Elberg, Parra, Petrache, arXiv 2405.01705, as a workflow. Every rule is a thin shell
around one `python -m ltaug STAGE` entry point; the stages and their files are listed
in README.md. Run: snakemake --cores all --resources gpu=1
"""

import os
import shlex
import sys

from snakemake.utils import min_version

min_version("9.0")


# The ltaug package is imported from this checkout, here (config validation) and in
# every job (python -m ltaug), whichever environment runs them. Jobs run the python of
# the environment that runs Snakemake, also when it was started as .venv/bin/snakemake
# without activating it; with --sdm conda, the python of the rule's conda environment.
sys.path.insert(0, workflow.basedir)
_CONDA = any(m.name == "CONDA" for m in workflow.deployment_settings.deployment_method)
_PATH = (
    ""
    if _CONDA
    else "export PATH=%s:$PATH; " % shlex.quote(os.path.dirname(sys.executable))
)
shell.prefix(
    "set -euo pipefail; %sexport PYTHONPATH='%s'${{PYTHONPATH:+:$PYTHONPATH}}; "
    % (_PATH, workflow.basedir)
)


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/images.smk"
include: "workflow/rules/diffusion.smk"
include: "workflow/rules/latents.smk"
include: "workflow/rules/il.smk"
include: "workflow/rules/cam.smk"
include: "workflow/rules/pairing.smk"
include: "workflow/rules/fusion.smk"
include: "workflow/rules/generate.smk"
include: "workflow/rules/baselines.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        get_final_output(),


# Rules of seconds: on a cluster they run in the Snakemake process itself, not as jobs.
localrules:
    all,
    split_classes,
    check_class_names,
    export_training_set,
    report,
