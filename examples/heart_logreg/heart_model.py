"""A user's own model on the four heart-disease hospitals' files: logistic regression.

The config names it ``model = "heart_model:logistic_regression"``; fedlr calls it with the
number of input features (after one-hot encoding the categorical columns the sites agreed on)
and of classes, and trains it federated over the hospitals' CSV files::

    cd examples/heart_logreg && fedlr simulate scenario.toml
"""

from torch import nn


def logistic_regression(num_features: int, num_classes: int) -> nn.Module:
    """Multinomial logistic regression: one linear layer (softmax is in the loss)."""
    return nn.Sequential(nn.Linear(num_features, num_classes))
