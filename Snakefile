"""ltaug: long-tail image generation through feature-space augmentation and iterated learning.

Elberg, Parra, Petrache, arXiv 2405.01705, as a workflow. Every rule is a thin shell
around one `python -m ltaug STAGE` entry point; the stages and their files are listed
in README.md. Run: snakemake --cores all --resources gpu=1
"""

import sys

from snakemake.utils import min_version

min_version("9.0")


# The ltaug package is imported from this checkout, here (config validation) and in
# every job (python -m ltaug), whichever environment runs them.
sys.path.insert(0, workflow.basedir)
shell.prefix(
    "set -euo pipefail; export PYTHONPATH='%s'${{PYTHONPATH:+:$PYTHONPATH}}; "
    % workflow.basedir
)


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
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
    input:
        get_final_output(),
    default_target: True
