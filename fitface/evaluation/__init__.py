"""Evaluation of face models: the paper's metrics (§5.3-5.5), ``fitface evaluate`` and the proxy."""
