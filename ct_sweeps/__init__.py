"""ct_sweeps: hyperparameter sweeps of counterfactual training on Ray Tune, tracked in MLflow.

Three parts, each importing only those before it (``tests/test_sweeps_layers.py``):
``plan/`` (the sweep file, its search space with the one place a distribution is sampled, the
packs and their cost model, the run directory; no Ray, no MLflow), ``run/`` (the sweep's Ray,
the pack trainable for K >= 1 settings, the Tune experiment, what the trials left behind) and
``record/`` (the tracker's events, the stream that makes them live or from the run directory,
MLflow as the tracker, the report). ``runner.py`` puts them together (run, resume,
``sync-mlflow``); ``cli.py`` is ``ct-sweep``. ``docs/architecture.md`` has the module table.
"""
