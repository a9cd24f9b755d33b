"""Kubeflow Pipelines components of facegate: thin wrappers around ``facegate.pipeline.steps``."""

from facegate import __version__

#: The one image every component runs in: the training/pipeline image (docker/pipeline.Dockerfile), tagged with
#: the package version so a compiled pipeline always names the code it was compiled from.
BASE_IMAGE = f"ghcr.io/facegate/facegate-pipeline:{__version__}"
