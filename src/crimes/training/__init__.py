"""Training: search, fit, evaluate, register and promote the two models."""
