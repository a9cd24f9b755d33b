"""Rollout: Kubernetes objects for serving and scheduled work, their CRD validation, and canary analysis.

- :mod:`facegate.rollout.crds`: validate any custom object against its CustomResourceDefinition (jsonschema on the
  CRD's ``openAPIV3Schema``), shared by the InferenceService, TrainJob, RayJob and CronWorkflow builders.
- :mod:`facegate.rollout.kserve`: the KServe ``InferenceService`` of a registered model version, the canary /
  promote / rollback changes (made through the Helm release, :mod:`facegate.rollout.helm`), the gallery template
  check that gates them, and server-side apply.
- :mod:`facegate.rollout.canary`: the canary analysis (a pure decision over two versions' metrics), its metric
  sources (the Prometheus HTTP API, a direct ``/metrics`` scrape) and :func:`~facegate.rollout.canary.local_canary`.
- :mod:`facegate.rollout.procs`: ``facegate serve`` as a child process on 127.0.0.1 (laptop canary, tests).

Nothing here is imported by ``import facegate``; the Kubernetes client, jsonschema and httpx load on first use.
"""
