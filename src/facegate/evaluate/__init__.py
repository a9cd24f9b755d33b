"""Evaluation: verification metrics (10-fold accuracy, ROC/AUC, EER, TAR@FAR) and the pair-evaluation runner."""
