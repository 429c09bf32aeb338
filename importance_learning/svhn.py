"""SVHN (greyscale, unnormalised): Table 3, SVHN rows (docs/original.md §3.4).

    python -m importance_learning.svhn_preprocess --data-dir D      # once: .mat -> HDF5
    python -m importance_learning.svhn --noise 0.5 --data-dir D --out runs/svhn50

Data: ``SVHN_single_grey_without_extra.h5`` (made by ``svhn_preprocess``): greyscale 32x32x1
with values 0..255 — not normalised, as the original (hence its small lr_v); the training
set is truncated to a multiple of the batch size (72,257 -> 72,200); validation 1,000
(100 per class); test 26,032. Noise on the first int(noise N) training labels (the README's
"line 62", default 0.5).

Defaults are the original's: Penalty lr_u 3, lr_v 1e-5, 101 epochs, T = 20, nu_0 = 0,
pre-training 200 epochs Adam(1e-5), importance init 0.2/0.8, and its accuracy formula with
the ceil denominator (test accuracy printed = 0.99359 x the exact one; both are logged);
ApproxGrad lr_u 1, lr_v 1e-6, lr_p 1e-5, 20 + 20 steps, 101 epochs, halving every 20,
pre-training Adam(1e-3).
"""

from __future__ import annotations

from importance_learning import driver
from penalty_tf.paper import experiment


def load(s) -> driver.Split:
    from penalty_tf.datasets.svhn import load_svhn_grey

    d = load_svhn_grey(s.data_dir)
    keep = (len(d.x_train) // s.batch_size) * s.batch_size     # 72,257 -> 72,200
    return driver.Split(d.x_train[:keep], d.y_train[:keep], d.x_val, d.y_val, d.x_test, d.y_test)


SPEC = driver.DatasetSpec(experiment="importance_learning.svhn", model="svhn_cnn", load=load, description=__doc__)


def main(argv=None):
    return driver.run(SPEC, argv)


if __name__ == "__main__":
    experiment.run_main(main)
