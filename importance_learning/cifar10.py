"""CIFAR10 with the original's augmentation: Table 3, CIFAR10 rows (docs/original.md §3.3).

    python -m importance_learning.cifar10 --noise 0.25 --method penalty --out runs/cifar25

Data: Keras' CIFAR10 (the ``cifar-10-batches-py`` folder, see `penalty_tf.datasets.cifar10`)
divided by 255; train = the first 40,000 official training images, validation = the last
``--val-size`` (10,000), test = the official 10,000; noise on the first int(noise N)
training labels (the README's "line 70", default 0.25).

Augmentation (bilevel phase only, as the original): every bilevel minibatch — the training
images AND, a quirk kept on purpose, the validation images — gets one fresh random transform
per image with the parameters of the original's ``ImageDataGenerator`` (rotation 40°, shifts
0.2, shear 0.2 in degrees as Keras >= 2.2, zoom 0.8-1.2 per axis, horizontal flips, nearest
fill), re-implemented in `importance_learning.driver.augment_batch` with Keras' own affine
matrix and scipy interpolation; ``tf_keras`` (which still ships ImageDataGenerator) is not a
dependency. Pre-training and evaluation use the plain images.

Defaults are the original's: Penalty lr_u 3, lr_v 1e-4, 200 epochs, T = 20, nu_0 = 1e-4,
pre-training 101 epochs Adam(1e-4), importance init 0.2/0.8; ApproxGrad lr_u 1, lr_v 1e-5,
lr_p 1e-4, 1 + 1 inner steps (the code's values; the paper states 20/20: pass
``--lower-steps 20 --linear-steps 20``), 201 epochs, halving every 20 epochs, pre-training
Adam(1e-3).
"""

from __future__ import annotations

import dataclasses

from importance_learning import driver
from importance_learning.settings import Settings, setting
from penalty_tf.paper import experiment


@dataclasses.dataclass(frozen=True, kw_only=True)
class CifarSettings(Settings):
    """`Settings` plus the size of the validation set."""

    val_size: int = setting("validation = the last N official training images (default: 10000)", int,
                            minimum=1)


def load(s: CifarSettings) -> driver.Split:
    from penalty_tf.datasets.cifar10 import load_cifar10

    d = load_cifar10(s.data_dir)
    if not 0 < s.val_size < len(d.x_train):
        raise experiment.ExperimentError(f"--val-size must be in 1..{len(d.x_train) - 1}")
    x = d.x_train.astype("float32") / 255.0
    cut = len(x) - s.val_size
    return driver.Split(x[:cut], d.y_train[:cut], x[cut:], d.y_train[cut:],
                        d.x_test.astype("float32") / 255.0, d.y_test)


SPEC = driver.DatasetSpec(
    experiment="importance_learning.cifar10", model="cifar10_cnn", load=load, settings=CifarSettings,
    augment=driver.augment_batch, description=__doc__)


def main(argv=None):
    return driver.run(SPEC, argv)


if __name__ == "__main__":
    experiment.run_main(main)
