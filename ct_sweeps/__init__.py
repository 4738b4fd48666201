"""ct_sweeps: hyperparameter sweeps of counterfactual training on Ray Tune, tracked in MLflow.

Orchestration only (design.md): it validates a sweep file, turns its space into a Ray Tune /
Optuna search, runs :class:`ct_core.training.Trainer` in a function trainable, and logs to MLflow
from the driver.

=================  ==============================================================================
``schema.py``      the sweep YAML (pydantic, unknown keys rejected) and ``--set`` overrides
``space.py``       grid axes, distributions, conditional entries; validation of every point
``trainable.py``   the Tune trainable: one trial = one Trainer run, report + checkpoint per epoch
``packing.py``     packs: K settings of a grid/random sweep per trial (``PackTrainer``), planned
                   up front (``search.pack``), each setting still its own row and MLflow run
``last_round.py``  the last round of packs sized when a slot frees up (``PackSearcher``), so
                   that the slots end together
``tracking.py``    MLflow: parent run per sweep, child run per trial, ``sync-mlflow`` backfill
``callbacks.py``   the driver's other Tune callback (prepares the report's plotting)
``runner.py``      plan (no Ray), run (Tuner: search alg, ASHA, resources, failures), resume
``local_ray.py``   join a cluster, or start and stop the sweep's own Ray (quickly: no dashboard
                   process, no one-second polls)
``report.py``      results table, ``best_config.yaml``, Pareto front, plots
``cli.py``         ``ct-sweep run | resume | report | sync-mlflow``
``env.py``         environment defaults set before Ray/MLflow are imported
=================  ==============================================================================

A run directory (``./ct_runs/<name>-<timestamp>`` or ``--storage``) holds ``sweep.yaml`` (the
sweep with its base inlined), ``run.json`` (tracking URI, experiment and parent-run ids,
``timings``: where the driver's time went),
``tune/`` (Ray's experiment: one ``trial_<id>/`` with ``result.json`` and checkpoints per
trial), ``packs.json`` (packed sweeps: the settings of each pack trial, and how
the last round was dealt out), ``results.csv`` (one row
per setting: id, status, error, swept parameters, final metrics; ``pack`` names the pack trial
of a packed setting, whose id is ``<trial id>-<k>``), ``best_config.yaml``, ``pareto.csv``
(multi-objective), ``plots/``, ``mlflow.db`` and ``mlartifacts/`` (the default local MLflow
store).
"""
