"""iqa-tune: Ray Tune hyperparameter studies of HyperIQA (Su et al., CVPR 2020) for blind image quality assessment.

The solver (model, losses, data, metrics, training loop) is plain PyTorch and never imports Ray; Ray lives in
``iqa_tune.study`` (driver side) and ``iqa_tune.trainables`` (trial side).
"""

import os

__version__ = "0.1.0"


def load(source, trial: str | None = None, device: str = "auto"):
    """A trained model as a scorer: ``iqa_tune.load("ray_results/demo")(["a.jpg", "b.png"])`` -> scores.

    ``source``: an experiment folder or URI (its best trial by the study metric, at its best epoch; ``trial`` picks
    another), a trial or ``iqa-tune train`` folder, or a ``best.pt``. The scorer takes a path, a PIL image, a uint8
    (H, W, 3) array or a list of them, with its run's test-time preprocessing (:mod:`iqa_tune.predict`); it knows
    its ``config``, ``label_scale`` and ``origin`` (study, trial, checkpoint)."""
    from .predict import load as _load  # torch and timm load here, not on `import iqa_tune`

    return _load(source, trial, device)


# ``iqa_tune.reports`` and ``iqa_tune.trainables`` live in the top-level folders reports/ and trainables/ of the
# repository; setup.cfg's package_dir puts them inside this package in a wheel, and ``iqa_tune.study`` ships that
# installed layout to Ray workers. A source checkout run without installing (``PYTHONPATH=. python -m iqa_tune``,
# the tests, a GPU host) has them beside this folder instead: adding the checkout root to this package's search
# path lets the same import names resolve there (the mechanism of ``pkgutil.extend_path``). Only when the folder
# beside us is really ours, so an installed copy never reaches into its neighbours.
SUBPACKAGES = ("reports", "trainables")
_here = os.path.dirname(os.path.abspath(__file__))
CHECKOUT = os.path.dirname(_here)  # the repository root when running from a source tree
if not os.path.isdir(os.path.join(_here, SUBPACKAGES[0])) and all(
        os.path.isfile(os.path.join(CHECKOUT, name, "__init__.py")) for name in SUBPACKAGES):
    __path__.append(CHECKOUT)
