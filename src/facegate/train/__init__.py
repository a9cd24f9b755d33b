"""Training: iResNet + margin softmax, from one CPU to a DDP GPU cluster (``facegate train CONFIG.yaml``)."""
