"""Faces: detection (YuNet), 5-point alignment onto the ArcFace template, and the kiosk face-selection policy."""
