"""MNIST small-scale hyper-cleaning with softmax regression: the comparison with Franceschi et
al. (paper 90.77 % vs their 90.09 %, 50 % noise). docs/original.md §3.1.

    python -m importance_learning.mnist_small --noise 0.5 --out runs/mnist_small

Data: Keras MNIST flattened to 784 and divided by 255; train = official training images
0-4999, validation = 5000-9999, test = the official 10,000. Penalty only (the original has
no ApproxGrad variant), 100 epochs x 25 upper iterations with T = 20, then the classifier is
re-initialised and retrained for 500 epochs on the points with importance > 0.9 plus the
validation set; that retrained classifier's test accuracy is ``metrics.test_accuracy``.
The original's accuracy formula here divides by ceil(N/200)*200 (exact for 10,000 points).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from importance_learning import driver
from importance_learning.settings import Settings, setting
from penalty_tf.paper import experiment


def load(s) -> driver.Split:
    from penalty_tf.datasets import load_mnist

    d = load_mnist(s.data_dir)
    x = (d.x_train.reshape(-1, 784).astype("float32") / 255.0)
    xt = (d.x_test.reshape(-1, 784).astype("float32") / 255.0)
    return driver.Split(x[:5000], d.y_train[:5000].astype("int64"), x[5000:10000],
                        d.y_train[5000:10000].astype("int64"), xt, d.y_test.astype("int64"))


@dataclasses.dataclass(frozen=True, kw_only=True)
class SmallSettings(Settings):
    """`Settings` plus the retraining on the selected points."""

    retrain_epochs: int = setting("epochs of retraining on the selected points + validation", int, minimum=1)
    retrain_lr: float = setting("Adam learning rate of the retraining", above=0)
    select_threshold: float = setting("importance above which a training point is selected (importances "
                                      "are in (0, 1))", minimum=0, below=1)


def retrain(s: SmallSettings, clf, split: driver.Split, a: np.ndarray, corrupt: int) -> dict:
    """Fresh classifier weights (seed + 1: the original re-ran every initialiser), trained on
    the points with a > threshold plus the validation set; its accuracies."""
    import keras

    from penalty_tf.models import classifiers

    selected = np.flatnonzero(a > s.select_threshold)
    x = np.concatenate([split.x_train[selected], split.x_val])
    y = np.concatenate([split.y_train[selected], split.y_val])
    keras.utils.set_random_seed(s.seed + 1)
    clf.model.set_weights(classifiers.build(clf.model.name).get_weights())
    bar = experiment.progress(s.retrain_epochs, quiet=s.quiet, unit_name="retraining epoch")
    clf.train_simple(x, y, s.retrain_epochs, s.retrain_lr, np.random.default_rng([s.seed, 3]),
                     batch_size=s.batch_size, rounding=s.train_rounding, progress=bar.update)
    acc = driver.accuracies(clf, split, s)
    return {"selected_points": int(len(selected)), "selected_corrupted": int(np.sum(selected < corrupt)),
            "retrain_test_accuracy": acc["test_accuracy"],
            "retrain_test_accuracy_exact": acc["test_accuracy_exact"]}


SPEC = driver.DatasetSpec(
    experiment="importance_learning.mnist_small", model="mnist_softmax", load=load, settings=SmallSettings,
    retrain=retrain, methods=("penalty",), description=__doc__)


def main(argv=None):
    return driver.run(SPEC, argv)


if __name__ == "__main__":
    experiment.run_main(main)
