"""Dask execution: the cluster, per-slide and per-fold tasks, progress, resume, the run record."""
