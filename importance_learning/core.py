"""The NumPy side of importance learning: label noise, importance maths, accuracies, statistics.

Everything here follows the original denoising drivers (docs/original.md §3.0) and is tested
number by number in ``tests/test_importance_core.py``:

* `inject_noise` — the first ``int(rho N)`` training labels (dataset order, not a random
  subset) get a label drawn uniformly among the 9 *other* classes, by rejection sampling of
  ``randint(0, 10)`` as the original did; validation and test labels stay clean.
* importances ``a = (tanh z + 1) / 2`` of logits z; `initial_logits` sets a = ``high`` where
  the validation-pretrained model agrees with the (noisy) label, ``low`` elsewhere;
  `renormalise` forces mean(a) = 0.5, clips to [1e-5, 0.99999] and maps back, in float64.
* `original_accuracy` — the original's ``eval_simple`` formula: correct predictions among the
  evaluated points divided by ``number_of_batches * batch_size`` (floor: the last partial
  batch is skipped; ceil: evaluated but the denominator is rounded up, which under-estimates
  accuracy, e.g. SVHN test x 0.99359). `exact_accuracy` is the plain fraction.
* `separation` — what the original never showed: how well the importances separate the
  clean points from the corrupted ones.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

NUM_CLASSES = 10
CLIP_LOW, CLIP_HIGH = 1e-5, 0.99999


def inject_noise(labels: np.ndarray, noise: float, rng: np.random.Generator,
                 num_classes: int = NUM_CLASSES) -> tuple[np.ndarray, int]:
    """Return ``(noisy_labels, corrupt)``: the first ``corrupt = int(noise * N)`` labels replaced
    by a uniformly drawn *different* class (integer labels in, integer labels out)."""
    if not 0.0 <= noise <= 1.0:
        raise ValueError(f"noise must be in [0, 1], got {noise}")
    labels = np.asarray(labels)
    noisy = labels.copy()
    corrupt = int(noise * len(labels))
    for i in range(corrupt):
        new = labels[i]
        while new == labels[i]:  # rejection sampling, as the original (randint(0, 10) until different)
            new = rng.integers(0, num_classes)
        noisy[i] = new
    return noisy, corrupt


def importance(z: np.ndarray) -> np.ndarray:
    """``a = (tanh z + 1) / 2`` in (0, 1)."""
    return 0.5 * (np.tanh(z) + 1.0)


def logits_of(a: np.ndarray) -> np.ndarray:
    """The inverse map ``z = atanh(2a - 1)``."""
    return np.arctanh(2.0 * np.asarray(a, np.float64) - 1.0)


def initial_logits(predicted: np.ndarray, noisy_labels: np.ndarray, low: float,
                   high: float) -> np.ndarray:
    """z with a = ``high`` where prediction == noisy label, a = ``low`` elsewhere (float64)."""
    agree = np.asarray(predicted) == np.asarray(noisy_labels)
    return logits_of(np.where(agree, high, low))


def renormalise(z: np.ndarray) -> np.ndarray:
    """After each epoch: a = importance(z); a <- 0.5 a / mean(a); clip; back to logits (float64)."""
    a = importance(np.asarray(z, np.float64))
    a = 0.5 * a / np.mean(a)
    return logits_of(np.clip(a, CLIP_LOW, CLIP_HIGH))


def num_batches(n: int, batch_size: int, rounding: str) -> int:
    """``floor`` or ``ceil`` of n / batch_size (the original used both, per script)."""
    if rounding == "floor":
        return n // batch_size
    if rounding == "ceil":
        return -(-n // batch_size)
    raise ValueError(f"rounding must be 'floor' or 'ceil', got {rounding!r}")


def original_accuracy(predicted: np.ndarray, labels: np.ndarray, batch_size: int,
                      rounding: str) -> float:
    """The original's ``eval_simple`` accuracy (fraction, see module doc)."""
    n = len(labels)
    nb = num_batches(n, batch_size, rounding)
    if nb == 0:
        return float("nan")
    evaluated = min(n, nb * batch_size)
    correct = int(np.sum(np.asarray(predicted)[:evaluated] == np.asarray(labels)[:evaluated]))
    return correct / (nb * batch_size)


def exact_accuracy(predicted: np.ndarray, labels: np.ndarray) -> float:
    """Plain fraction of correct predictions."""
    return float(np.mean(np.asarray(predicted) == np.asarray(labels))) if len(labels) else float("nan")


def separation(a: np.ndarray, corrupt: int, threshold: float = 0.5) -> dict[str, Any]:
    """Importance statistics and how well ``a > threshold`` recovers the clean points.

    Points ``0 .. corrupt-1`` are the corrupted ones. Precision = fraction of the points
    with a > threshold that are clean; recall = fraction of the clean points with
    a > threshold. NaN where undefined (no point selected, no clean point).
    """
    a = np.asarray(a, np.float64)
    clean = np.arange(len(a)) >= corrupt
    selected = a > threshold
    n_sel = int(selected.sum())
    n_clean = int(clean.sum())
    tp = int(np.sum(selected & clean))
    return {
        "mean_importance": float(a.mean()),
        "fraction_above_0.1": float(np.mean(a > 0.1)),
        "mean_importance_clean": float(a[clean].mean()) if n_clean else math.nan,
        "mean_importance_corrupted": float(a[~clean].mean()) if corrupt else math.nan,
        "selected": n_sel,
        "precision_clean": tp / n_sel if n_sel else math.nan,
        "recall_clean": tp / n_clean if n_clean else math.nan,
    }
