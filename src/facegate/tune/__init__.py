"""Hyperparameter tuning with Ray Tune (``facegate tune CONFIG.yaml``)."""
