"""Label and feature noise, injected with a caller's ``np.random.Generator``.

Label noise follows the learning-with-noisy-labels conventions (Han et al. 2018, Co-teaching;
FedNoisy, Liang et al. 2023): *symmetric* noise replaces a label, with probability ``rate``, by a
class drawn uniformly from all ``C`` classes; *pair-flip* noise moves it to the next class.
"""

from __future__ import annotations

import numpy as np


def _check_labels(y: np.ndarray, rate: float, num_classes: int) -> np.ndarray:
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"rate: expected a number in [0, 1], got {rate!r}")
    if num_classes < 2:
        raise ValueError(f"num_classes: expected an integer >= 2, got {num_classes!r}")
    y = np.asarray(y)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"y: expected a 1-D integer array, got {y.dtype} of shape {y.shape}")
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(
            f"y: expected labels in [0, {num_classes - 1}], got [{y.min()}, {y.max()}]"
        )
    return y.astype(np.int64)


def symmetric_label_noise(
    y: np.ndarray, rate: float, num_classes: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    r"""Replace each label, with probability ``rate``, by a uniform draw over all classes.

    .. math::

        \tilde y = \begin{cases} c \sim U\{0, \dots, C-1\} & \text{with prob. } \varepsilon \\
        y & \text{otherwise} \end{cases}

    The true class is included in the draw, so a label actually changes with probability
    :math:`\varepsilon (1 - 1/C)`, and :math:`P(\tilde y = y) = 1 - \varepsilon (C - 1)/C`:
    ``rate = 1`` still leaves :math:`1/C` of the labels correct (pure noise, no signal).

    Parameters
    ----------
    y : np.ndarray
        Shape ``(n,)``, integer labels in ``0..num_classes-1``.
    rate : float
        :math:`\varepsilon`, the resampling probability, in ``[0, 1]``.
    num_classes : int
        :math:`C`, at least 2.
    rng : np.random.Generator
        Source of randomness.

    Returns
    -------
    y_noisy : np.ndarray
        Shape ``(n,)``, int64.
    changed_mask : np.ndarray
        Shape ``(n,)``, bool, ``y_noisy != y``.

    Raises
    ------
    ValueError
        An argument is out of range; the message names it.

    Examples
    --------
    >>> y = np.zeros(100_000, dtype=np.int64)
    >>> _, changed = symmetric_label_noise(y, 0.5, 10, np.random.default_rng(0))
    >>> round(float(changed.mean()), 2)  # 0.5 * (1 - 1/10)
    0.45
    """
    y = _check_labels(y, rate, num_classes)
    resample = rng.random(y.size) < rate
    drawn = rng.integers(0, num_classes, size=y.size, dtype=np.int64)
    y_noisy = np.where(resample, drawn, y)
    return y_noisy, y_noisy != y


def pair_flip_label_noise(
    y: np.ndarray, rate: float, num_classes: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    r"""Move each label, with probability ``rate``, to the next class: :math:`y \to (y+1) \bmod C`.

    Every selected label changes, so the changed fraction is :math:`\varepsilon` in expectation.
    For ``rate > 0.5`` the wrong class is the majority for every class.

    Parameters
    ----------
    y : np.ndarray
        Shape ``(n,)``, integer labels in ``0..num_classes-1``.
    rate : float
        :math:`\varepsilon`, the flip probability, in ``[0, 1]``.
    num_classes : int
        :math:`C`, at least 2.
    rng : np.random.Generator
        Source of randomness.

    Returns
    -------
    y_noisy : np.ndarray
        Shape ``(n,)``, int64.
    changed_mask : np.ndarray
        Shape ``(n,)``, bool, ``y_noisy != y``.

    Raises
    ------
    ValueError
        An argument is out of range; the message names it.

    Examples
    --------
    >>> pair_flip_label_noise(np.array([0, 1, 9]), 1.0, 10, np.random.default_rng(0))[0]
    array([1, 2, 0])
    """
    y = _check_labels(y, rate, num_classes)
    flip = rng.random(y.size) < rate
    y_noisy = np.where(flip, (y + 1) % num_classes, y)
    return y_noisy, y_noisy != y


def gaussian_feature_noise(x: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    r"""Add i.i.d. Gaussian noise to every input feature: :math:`\tilde x = x + N(0, \sigma^2)`.

    Models a client whose inputs are degraded ("older equipment"); labels are untouched.

    Parameters
    ----------
    x : np.ndarray
        Inputs of any shape.
    sigma : float
        Standard deviation, at least 0; 0 returns a float32 copy of ``x``.
    rng : np.random.Generator
        Source of randomness.

    Returns
    -------
    np.ndarray
        Same shape as ``x``, float32, a new array.

    Raises
    ------
    ValueError
        ``sigma`` is negative or not finite.
    """
    if not (np.isfinite(sigma) and sigma >= 0):
        raise ValueError(f"sigma: expected a finite number >= 0, got {sigma!r}")
    x = np.asarray(x, dtype=np.float32)
    if sigma == 0:
        return x.copy()
    return (x + rng.normal(0.0, sigma, size=x.shape)).astype(np.float32)
