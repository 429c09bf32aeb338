"""Tasks of the few-shot experiments: a meta-split's images and the original's task sampler.

A task is N classes of a split with K support and Q query images per class, labelled by
the class's position 0..N-1 in the task; a meta-batch is T tasks (docs/original.md §3.5.4).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import numpy as np

from penalty_tf.paper import experiment

#: Query images per class in every task (the original's ntest_per_cls).
QUERY_PER_CLASS = 15


@dataclasses.dataclass
class Split:
    """Images of one meta-split: ``images`` (n, H, W, C) float32 or uint8 (scaled by 1/255
    when sampled), integer ``labels`` (n,), and the class ids that belong to the split."""

    images: np.ndarray
    labels: np.ndarray
    classes: np.ndarray

    def __post_init__(self):
        self.classes = np.asarray(self.classes)
        order = np.argsort(self.labels, kind="stable")
        sorted_labels = self.labels[order]
        starts = np.searchsorted(sorted_labels, self.classes, side="left")
        ends = np.searchsorted(sorted_labels, self.classes, side="right")
        # Index lists per class, in ascending index order (as the original's np.argwhere).
        self.members = {int(c): order[s:e] for c, s, e in zip(self.classes, starts, ends)}

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.images.shape[1:])

    def gather(self, index: np.ndarray) -> np.ndarray:
        """float32 images at ``index`` (any shape); uint8 images are divided by 255."""
        x = self.images[index.reshape(-1)]
        x = x.astype(np.float32) / np.float32(255.0) if x.dtype == np.uint8 else x.astype(np.float32)
        return x.reshape(*index.shape, *self.image_shape)


class MetaBatch(NamedTuple):
    """One meta-batch: support images (T, N*K, H, W, C), labels (T, N*K); query images
    (T, N*Q, H, W, C), labels (T, N*Q). Labels are class positions 0..N-1 in the task."""

    support: np.ndarray
    support_labels: np.ndarray
    query: np.ndarray
    query_labels: np.ndarray


class TaskSampler:
    """The original's ``get_tasks`` (docs/original.md §3.5.4) on one split.

    For each task of a meta-batch: the classes not yet used in this meta-batch are
    shuffled and the first N taken (the used list is cleared when fewer than N + 1
    classes would remain, so tasks are disjoint whenever possible); for class position j
    the class's images are shuffled, the first K go to the support set and the next Q to
    the query set, with label j; then the support and query sets are shuffled.
    """

    def __init__(self, split: Split, nway: int, kshot: int, rng: np.random.Generator,
                 query: int = QUERY_PER_CLASS):
        self.split, self.nway, self.kshot, self.query, self.rng = split, nway, kshot, query, rng
        if len(split.classes) < nway:
            raise experiment.ExperimentError(
                f"a {nway}-way task needs {nway} classes; the split has {len(split.classes)}")
        small = [c for c, idx in split.members.items() if len(idx) < kshot + query]
        if small:
            raise experiment.ExperimentError(
                f"{len(small)} classes have fewer than K + {query} = {kshot + query} images "
                f"(e.g. class {small[0]} has {len(split.members[small[0]])})")

    def sample_indices(self, tasks: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Image indices (T, N*K), (T, N*Q) and the classes chosen (T, N)."""
        n, k, q = self.nway, self.kshot, self.query
        classes = self.split.classes
        support = np.empty((tasks, n * k), np.int64)
        query = np.empty((tasks, n * q), np.int64)
        chosen = np.empty((tasks, n), classes.dtype)
        used: list[int] = []
        for t in range(tasks):
            if len(used) + n >= len(classes):
                used = []
            candidates = classes[~np.isin(classes, used)]
            self.rng.shuffle(candidates)
            chosen[t] = candidates[:n]
            used += [int(c) for c in chosen[t]]
            for j, c in enumerate(chosen[t]):
                idx = self.split.members[int(c)].copy()
                self.rng.shuffle(idx)
                support[t, j * k:(j + 1) * k] = idx[:k]
                query[t, j * q:(j + 1) * q] = idx[k:k + q]
            self.rng.shuffle(support[t])
            self.rng.shuffle(query[t])
        return support, query, chosen

    def sample(self, tasks: int) -> MetaBatch:
        """A meta-batch of ``tasks`` tasks: `sample_indices`, then the images gathered and
        the labels turned into class positions."""
        support, query, chosen = self.sample_indices(tasks)
        return MetaBatch(self.split.gather(support), self.positions(support, chosen),
                         self.split.gather(query), self.positions(query, chosen))

    def positions(self, index: np.ndarray, chosen: np.ndarray) -> np.ndarray:
        """Label of each image = position of its class in its task (int32)."""
        labels = self.split.labels[index]
        return np.argmax(labels[:, :, None] == chosen[:, None, :], axis=-1).astype(np.int32)
