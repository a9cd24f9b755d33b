"""Export: ONNX and OpenVINO IR (FP32, FP16, INT8 via NNCF) with parity gates (``facegate export MODEL``)."""
