"""Training: fit a seed or user architecture on a dataset and write a run folder (``fit.train``)."""
