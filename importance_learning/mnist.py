"""MNIST large scale with the CNN: Table 3, MNIST rows (docs/original.md §3.2).

    python -m importance_learning.mnist --noise 0.25 --method penalty --out runs/mnist25

Data: Keras MNIST as 28x28x1 / 255; train = the first 59,000 official training images,
validation = the last 1,000, test = the official 10,000; noise on the first int(noise N)
training labels (the README's "line 64", default 0.25). ``metrics.test_accuracy`` = the
final epoch's test accuracy of the bilevel-trained CNN (the paper does not say last or
best epoch; every epoch is in ``metrics.epochs``).

Defaults are the original's: Penalty lr_u 3, lr_v 1e-4, 101 epochs (0..100), T = 20,
rho_0 = lambda_0 = eps_0 = 1e-2, nu_0 = 1e-6, pre-training 100 epochs Adam(1e-4), importance
init 0.4/0.6; ApproxGrad lr_u 1, lr_v 1e-6, lr_p 1e-5, sigma 1e-3, 20 + 20 steps, epochs
1..100 with lr_u, lr_v halved after every 20th, pre-training Adam(1e-3). The full budget is
about 30,000 upper iterations (the original: 14 s each on 2 cores); use ``--train-size``
and ``--epochs`` for reduced budgets. The defaults are the rows of this script in
`penalty_tf.paper.defaults.importance`.
"""

from __future__ import annotations

from importance_learning import driver
from penalty_tf.paper import experiment


def load(s) -> driver.Split:
    from penalty_tf.datasets import load_mnist

    d = load_mnist(s.data_dir)
    x = d.x_train.reshape(-1, 28, 28, 1).astype("float32") / 255.0
    xt = d.x_test.reshape(-1, 28, 28, 1).astype("float32") / 255.0
    y = d.y_train.astype("int64")
    return driver.Split(x[:59000], y[:59000], x[59000:], y[59000:], xt, d.y_test.astype("int64"))


SPEC = driver.DatasetSpec(experiment="importance_learning.mnist", model="mnist_cnn", load=load,
                          description=__doc__)


def main(argv=None):
    return driver.run(SPEC, argv)


if __name__ == "__main__":
    experiment.run_main(main)
