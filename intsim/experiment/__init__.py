"""The experiment layer, beneath the commands and above golden/analysis: running many
configurations (tasks.py: local processes or Dask), the resumable store (store.py), plan files
(plans.py), the cost model (cost.py), plots (plots.py), sweeps (sweep.py) and the unified-metric
selection (select.py)."""
