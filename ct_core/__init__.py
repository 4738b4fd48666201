"""ct_core: Counterfactual Training in PyTorch (no Ray, no MLflow).

See docs/architecture.md for the modules and their contracts; ``ct train`` / ``ct evaluate`` /
``ct compare`` are in :mod:`ct_core.cli`.
"""

__version__ = "0.1.0"
