"""iqa-tune: Ray Tune hyperparameter studies of HyperIQA (Su et al., CVPR 2020) for blind image quality assessment.

The solver (model, losses, data, metrics, training loop) is plain PyTorch and never imports Ray; Ray lives in
``iqa_tune.study`` (driver side) and ``trainables/`` (trial side).
"""

__version__ = "0.1.0"
