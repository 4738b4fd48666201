"""The study of `scripts/bayes_vs_grid.py`: Optuna TPE against the paper's tuning grid.

`sweeps` builds and runs the two `ct-sweep run` commands, `runs` reads their run directories back,
`stats` holds the order statistics of the comparison, `analysis` computes it, `report` writes its
tables and markdown and `plot` its figure.
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
METRIC = "val_implausibility"
SWEEPS = ("grid", "bayes")
