"""ltaug: long-tail image generation through feature-space augmentation and iterated learning.

Implements Elberg, Parra, Petrache, *Long Tail Image Generation Through Feature
Space Augmentation and Iterated Learning* (arXiv 2405.01705) as a Snakemake
workflow. One module per stage; each exposes pure functions plus the entry point
that `python -m ltaug STAGE` (and so every rule) calls.
"""

__version__ = "0.1.0"
