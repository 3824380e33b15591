"""Networks and model files (installed as ``fitface.models``)."""
