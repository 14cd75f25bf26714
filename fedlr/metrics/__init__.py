"""Fairness, continual-learning and estimator-quality metrics. Pure."""
