"""`Split`: a dataset's training, validation and test arrays, as the experiments use them."""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass
class Split:
    """Images (or features) and integer labels of the training, validation and test sets.
    Experiments with more arrays subclass it (`poisoning.common.Splits` adds the poisons)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    def replace(self, **arrays: np.ndarray) -> "Split":
        """A copy with the named arrays replaced (e.g. ``split.replace(y_train=noisy)``)."""
        return dataclasses.replace(self, **arrays)
