"""Trainer, losses, metrics and recipes (installed as ``fitface.train``)."""
