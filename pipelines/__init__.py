"""Kubeflow pipelines; each module compiles itself to the YAML beside it."""
