"""Serving: the enrollment gallery (``facegate.serve.gallery``); the KServe verifier arrives next."""
