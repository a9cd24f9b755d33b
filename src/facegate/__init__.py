"""facegate: face verification for exam check-in.

Importing this package has no side effects: no network, no files written, no environment changes. Heavy
dependencies (OpenCV, matplotlib, boto3) are imported by the sub-modules that need them.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
