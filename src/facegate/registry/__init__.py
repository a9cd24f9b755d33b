"""MLflow tracking and model logging (``facegate.registry.tracking``)."""
