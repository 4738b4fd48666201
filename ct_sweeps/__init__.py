"""ct_sweeps: hyperparameter sweeps of counterfactual training on Ray Tune, tracked in MLflow.

Three parts, each importing only those before it (``tests/test_sweeps_layers.py``):

======================  ========================================================================
``plan/``               the sweep file (``schema``), its search space and the one place a
                        distribution is sampled (``space``), the packs of a grid/random sweep
                        and their cost model (``packing``), the run directory (``rundir``).
                        No Ray, no MLflow.
``run/``                Ray and Tune: the sweep's own Ray or a cluster (``cluster``), the pack
                        trainable for K >= 1 settings (``trainable``), the tuner (``tune``,
                        ``searchers``), what the trials left in the run directory (``results``)
``record/``             the tracker's events (``events``) and where they come from
                        (``stream``: live from Tune, ``live``, or replayed from the run
                        directory), MLflow as the tracker (``mlflow_tracker``, ``store``),
                        the report (``report``)
``runner.py``           run, resume and ``sync-mlflow``: the three parts put together
``cli.py``              ``ct-sweep run | resume | report | sync-mlflow``
======================  ========================================================================

A run directory (``./ct_runs/<name>-<timestamp>`` or ``--storage``) holds ``sweep.yaml`` (the
sweep with its base inlined), ``run.json`` (tracking URI, experiment and parent-run ids,
``timings``), ``packs.json`` (grid/random sweeps: the settings of each trial), ``tune/`` (Ray
Tune's experiment: one ``trial_<id>/`` with ``result.json`` and checkpoints per trial),
``results.csv`` (one row per setting: id, status, error, swept parameters, final metrics; in a
packed sweep ``pack`` names its trial and the id is ``<trial id>-<k>``), ``best_config.yaml``,
``pareto.csv`` (multi-objective), ``plots/``, and the default local MLflow store ``mlflow.db``
with ``mlartifacts/``; ``ray_auth_token`` (mode 600) is the token of the sweep's own Ray.
"""
