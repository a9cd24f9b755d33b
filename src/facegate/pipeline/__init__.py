"""The platform layer: one library function per Kubeflow pipeline step, and running pipelines locally or on KFP.

- :mod:`facegate.pipeline.steps`: what each component of ``components/`` calls (exactly one function each).
- :mod:`facegate.pipeline.cluster`: Kubeflow Trainer ``TrainJob`` and KubeRay ``RayJob`` objects for the cluster.
- :mod:`facegate.pipeline.runner`: ``facegate pipeline compile|run`` (the local SubprocessRunner or ``kfp.Client``).
"""
