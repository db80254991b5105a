"""Baselines and the evaluation: the classifier, intervals, distances, novelty, the detector, the funnel, the report."""
