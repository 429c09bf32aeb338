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

from importance_learning import driver
from penalty_tf.paper import experiment


def load(args) -> driver.Split:
    from penalty_tf.datasets import load_mnist

    d = load_mnist(args.data_dir)
    x = (d.x_train.reshape(-1, 784).astype("float32") / 255.0)
    xt = (d.x_test.reshape(-1, 784).astype("float32") / 255.0)
    return driver.Split(x[:5000], d.y_train[:5000].astype("int64"), x[5000:10000],
                        d.y_train[5000:10000].astype("int64"), xt, d.y_test.astype("int64"))


SPEC = driver.DatasetSpec(
    experiment="importance_learning.mnist_small", model="mnist_softmax", load=load, retrain=True,
    methods=("penalty",), description=__doc__,
    defaults={"penalty": dict(noise=0.5, lr_u=3.0, lr_v=1e-4, epochs=100, lower_steps=20, nu0=1e-4,
                              pretrain_epochs=100, pretrain_lr=1e-4, init_low=0.4, init_high=0.6,
                              train_rounding="floor", eval_rounding="ceil", retrain_epochs=500,
                              retrain_lr=1e-4, select_threshold=0.9)})


def main(argv=None):
    return driver.run(SPEC, argv)


if __name__ == "__main__":
    experiment.run_main(main)
