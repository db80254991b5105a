"""Helpers the test tiers share: data the tests write, tiny stage models, hub layouts, the tiny workflow, a SLURM cluster."""
