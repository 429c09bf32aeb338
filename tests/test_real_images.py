"""Real images through the few-shot and the CIFAR10 / SVHN importance-learning pipelines.

Only MNIST is on this machine, so its digits are written in the other datasets' real file
formats (`penalty_tf.datasets.from_mnist`) and the scripts run on them at small budgets:
accuracies and importances then mean something, unlike on the random pixels of the
format tests (tests/test_few_shot_scripts.py, tests/test_importance_scripts.py).

The scripts are called through their ``main(argv)`` (argv = that of ``python -m <script>``)
in this process, as the other script tests do: one TensorFlow import instead of one per run
(the measured numbers below came from ``python -m`` subprocesses; the in-process runs gave
the same values, the WRN's test accuracy up to float noise: 49.2 vs 49.0 %).

Every threshold states the values measured with the test's own settings (seeds 0, 1, 2;
the test runs seed 0) and why it sits where it does.
"""

import json

import numpy as np
import pytest

from penalty_tf.paper import experiment
from penalty_tf.datasets import from_mnist


@pytest.fixture(scope="module")
def mnist(shared_data_dir):
    with np.load(shared_data_dir / "mnist.npz") as data:
        return {key: data[key] for key in data.files}


# ------------------------------------------------------------------------- Omniglot


@pytest.fixture(scope="module")
def omniglot_dir(mnist, tmp_path_factory):
    """x/y_omniglot_1.npy of 40 classes (10 digits x 4 rotations) of 50 images each."""
    from penalty_tf.datasets.omniglot import Omniglot, save_omniglot_arrays

    out = tmp_path_factory.mktemp("omniglot_mnist")
    save_omniglot_arrays(Omniglot(*from_mnist.omniglot_arrays(mnist["x_train"], mnist["y_train"], 50)), out)
    return out


def test_omniglot_arrays_have_the_loaders_layout_and_split(omniglot_dir, mnist):
    from few_shot import omniglot
    from penalty_tf.datasets.omniglot import load_omniglot

    data = load_omniglot(omniglot_dir)                     # validates dtype, shape, 4-rotation ids
    assert data.x.shape == (2000, 28, 28, 1) and data.num_classes == 40
    assert data.x.min() == 0.0 and data.x.max() == 1.0
    first_zero = mnist["x_train"][np.flatnonzero(mnist["y_train"] == 0)[0]].astype(np.float32) / 255
    np.testing.assert_array_equal(data.x[0, :, :, 0], first_zero)                       # class 0: digit 0
    np.testing.assert_array_equal(data.x[data.y == 1][0, :, :, 0], np.rot90(first_zero))  # class 1: 90 deg
    train, test = omniglot.load_splits(omniglot.resolve(["--data-dir", str(omniglot_dir), "--train-characters", "5"]))
    assert list(train.classes) == list(range(20)) and list(test.classes) == list(range(20, 40))
    # meta-train = digits 0-4, meta-test = digits 5-9 (class id // 4 = digit): disjoint digits
    assert set(train.classes // 4) == {0, 1, 2, 3, 4} and set(test.classes // 4) == {5, 6, 7, 8, 9}


#: 5-way 1-shot, meta-batch 4, 5 query images per class, 32 filters, 100 meta-test tasks.
OMNIGLOT_RUN = ["--train-characters", "5", "--nway", "5", "--kshot", "1", "--meta-batch", "4",
                "--query-per-class", "5", "--filters", "32", "--test-tasks", "100", "--seed", "0",
                "--quiet"]


@pytest.mark.parametrize("method", ["penalty", "approxgrad"])
def test_omniglot_meta_training_beats_the_untrained_encoder(omniglot_dir, tmp_path, method):
    """Meta-test accuracy (5-way 1-shot on digits 5-9, never seen in meta-training) of the
    encoder after 100 meta-iterations vs the same seeded encoder untrained.

    Untrained = one meta-iteration with ``--lr-u 0``: Adam with learning rate 0 leaves the
    encoder at its initial weights. Both runs evaluate once, on the same 100 meta-test tasks
    with the same classifier initialisations (the meta-test random streams are only drawn
    from at evaluations), so the difference is the encoder's training alone.
    """
    import tensorflow as tf

    from few_shot import omniglot
    from penalty_tf.models.few_shot import build_encoder

    run = ["--data-dir", str(omniglot_dir), "--method", method, *OMNIGLOT_RUN]
    untrained = omniglot.main(run + ["--out", str(tmp_path / "untrained"), "--iterations", "1",
                                     "--lr-u", "0"])
    trained = omniglot.main(run + ["--out", str(tmp_path / "trained"), "--iterations", "100",
                                   "--eval-every", "100"])
    experiment.seed_everything(0)                  # as the runner does before building the encoder
    initial = [w.numpy() for w in build_encoder("omniglot", (28, 28, 1), filters=32).trainable_variables]
    # The run's encoder weights are its solver's upper variables (saved once, under that path).
    sidecar = json.loads((tmp_path / "untrained" / "checkpoint" / "run.json").read_text())
    reader = tf.train.load_checkpoint(str(tmp_path / "untrained" / "checkpoint" / sidecar["checkpoint"]))
    for i, value in enumerate(initial):
        np.testing.assert_array_equal(
            reader.get_tensor(f"solver/upper/variables/{i}/.ATTRIBUTES/VARIABLE_VALUE"), value)
    before = untrained["metrics"]["final"]["acc_mean"]
    after = trained["metrics"]["final"]["acc_mean"]
    assert [e["iteration"] for e in trained["metrics"]["evaluations"]] == [100]
    # Measured (seeds 0 / 1 / 2, untrained -> trained, % over 100 tasks, 95 % CI +-2.3..2.5):
    #   penalty     48.52 -> 66.04,  46.92 -> 73.84,  50.28 -> 68.48   (gain 17.5, 26.9, 18.2)
    #   approxgrad  48.60 -> 72.20,  46.76 -> 68.12,  51.24 -> 68.56   (gain 23.6, 21.4, 17.3)
    # Command: python -m few_shot.omniglot --data-dir D --method M --seed S <OMNIGLOT_RUN> --out O
    # with --iterations 1 --lr-u 0 (untrained) and --iterations 100 --eval-every 100 (trained),
    # D = this fixture's arrays.
    # Chance is 20 % (5-way). Random conv features are already well above chance; the gain
    # threshold 8 points is half the smallest measured gain and > 3 x the sd (~1.7) of the
    # difference of two 100-task means.
    assert before > 35.0
    assert after - before > 8.0


# ---------------------------------------------------------------- CIFAR10 and SVHN layouts


@pytest.fixture(scope="module")
def digits(mnist):
    """3,000 training and 1,000 test digits (uint8 28x28) for the 32x32x3 layouts."""
    return mnist["x_train"][:3000], mnist["y_train"][:3000], mnist["x_test"][:1000], mnist["y_test"][:1000]


@pytest.fixture(scope="module")
def cifar_dir(digits, tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar_mnist")
    from_mnist.write_cifar10(root / "cifar-10-batches-py", *digits)
    return root


@pytest.fixture(scope="module")
def svhn_dir(digits, tmp_path_factory):
    """The official .mat files, then the HDF5 the experiments read (100 val images per class)."""
    from importance_learning import svhn_preprocess

    root = tmp_path_factory.mktemp("svhn_mnist")
    from_mnist.write_svhn_mats(root, *digits)
    svhn_preprocess.main(["--data-dir", str(root), "--seed", "0"])
    return root


def test_layouts_hold_the_digits(digits, cifar_dir, svhn_dir):
    from penalty_tf.datasets.cifar10 import load_cifar10
    from penalty_tf.datasets.svhn import load_svhn_grey, read_mat

    x, y, x_test, y_test = digits
    c = load_cifar10(str(cifar_dir), download=False)
    assert c.x_train.shape == (3000, 32, 32, 3) and c.x_train.dtype == np.uint8
    np.testing.assert_array_equal(c.x_train[:, 2:30, 2:30, 2], x)       # padded, every channel
    np.testing.assert_array_equal(c.y_train, y)
    np.testing.assert_array_equal(c.y_test, y_test)
    assert c.x_train[:, :2].max() == 0 and c.x_train[:, 30:].max() == 0
    mx, my = read_mat(svhn_dir / "test_32x32.mat")                     # 10 -> 0 on reading
    np.testing.assert_array_equal(my, y_test)
    np.testing.assert_array_equal(mx[..., 0], c.x_test[..., 0])
    s = load_svhn_grey(str(svhn_dir))
    assert (len(s.x_train), len(s.x_val), len(s.x_test)) == (2000, 1000, 1000)
    assert np.all(np.bincount(s.y_val, minlength=10) == 100)
    # grey = (0.2989 + 0.5870 + 0.1140) x value of the tiled channels, unscaled
    np.testing.assert_allclose(s.x_test[..., 0], 0.9999 * c.x_test[..., 0], rtol=1e-6)


def _check_importances(out, m, points, noise):
    """importances.npz agrees with the metrics; the corrupted points are the first int(noise N)."""
    corrupt = int(noise * points)
    assert m["corrupt"] == corrupt and m["training_points"] == points
    with np.load(out / "importances.npz") as saved:
        a, noisy, clean = saved["importance"], saved["noisy_labels"], saved["clean_labels"]
    assert a.shape == (points,) and int(np.sum(noisy != clean)) == corrupt
    assert np.all(noisy[:corrupt] != clean[:corrupt])
    assert a[corrupt:].mean() == pytest.approx(m["mean_importance_clean"])
    assert a[:corrupt].mean() == pytest.approx(m["mean_importance_corrupted"])
    return m["mean_importance_clean"] - m["mean_importance_corrupted"]


#: 400 noisy training points in minibatches of 50 (8 upper iterations of T = 3 per epoch),
#: 500 test points, pre-training 5 epochs on the 1,000 validation points, one bilevel epoch.
IMPORTANCE_RUN = ["--train-size", "400", "--batch-size", "50", "--test-size", "500", "--pretrain-epochs", "5",
                  "--epochs", "1", "--lower-steps", "3", "--method", "penalty", "--seed", "0", "--quiet"]


def test_cifar10_penalty_separates_clean_from_corrupted_from_uniform_importances(cifar_dir, tmp_path):
    """CIFAR10 script (25 % noise, the original's augmentation, lr_u 3, lr_v 1e-4), but every
    importance starts at 0.5 (--init-low = --init-high = 0.5), so any separation of clean from
    corrupted points is Penalty's own work, not the pre-trained model's initialisation."""
    from importance_learning import cifar10

    run = [a for a in IMPORTANCE_RUN]
    run[run.index("--train-size") + 1] = "600"
    run[run.index("--epochs") + 1] = "3"
    result = cifar10.main(["--data-dir", str(cifar_dir), "--out", str(tmp_path), "--val-size", "1000",
                           "--init-low", "0.5", "--init-high", "0.5", *run])
    m = result["metrics"]
    gap = _check_importances(tmp_path, m, 600, 0.25)
    gaps = [e["mean_importance_clean"] - e["mean_importance_corrupted"] for e in m["epochs"]]
    # Measured (seeds 0 / 1; the same flags through python -m importance_learning.cifar10):
    #   gap clean - corrupted after epochs 1, 2, 3: 0.033, 0.048, 0.075 / 0.002, 0.030, 0.053;
    #   test accuracy 76.4 / 74.6 % (Val-only 88.2 / 89.8 %). One epoch is not enough (seed 1).
    # Without learning the gap would be noise: sd ~0.01 (importances spread ~0.1, 150 vs 450
    # points); 0.03 is 3 sd and below both measured final gaps. Chance accuracy is 10 %.
    assert gap == pytest.approx(gaps[-1])
    assert gap > 0.03 and gaps[-1] > gaps[0]
    assert m["test_accuracy_exact"] > 50.0 and m["val_only_test_accuracy"] > 70.0


def test_svhn_importances_separate_clean_from_corrupted(svhn_dir, tmp_path):
    """SVHN script (50 % noise, unscaled grey 0..255, lr_u 3, lr_v 1e-5, nu_0 = 0, init 0.2/0.8)."""
    from importance_learning import svhn

    result = svhn.main(["--data-dir", str(svhn_dir), "--out", str(tmp_path), *IMPORTANCE_RUN])
    m = result["metrics"]
    gap = _check_importances(tmp_path, m, 400, 0.5)
    # Measured (seeds 0 / 1 / 2; python -m importance_learning.svhn --data-dir D
    # <IMPORTANCE_RUN with --seed S> --out O):
    #   clean - corrupted: 0.623 - 0.376 = 0.247, 0.602 - 0.370 = 0.232, 0.623 - 0.377 = 0.246
    #   (at the initialisation: 0.43, 0.44, 0.44); test accuracy 62.6, 60.2, 56.8 %
    #   (Val-only 64.4, 63.8, 60.2 %: 5 epochs of Adam(1e-5) on unscaled pixels is a weak model).
    # 0.12: half the smallest measured gap, > 2 sd of a gap without separation (200 vs 200
    # points: ~0.04). Chance accuracy is 10 %.
    assert gap > 0.12
    assert m["test_accuracy_exact"] > 40.0 and m["val_only_test_accuracy"] > 40.0


def test_cifar10_wrn_learns_from_scratch(cifar_dir, tmp_path):
    """The Ren et al. comparison script at a tiny budget: WRN-10-1, no pre-training, importances
    from 0.5, 36 % noise, SGD lr 0.1, T = 1, 3 epochs of 8 upper iterations on 400 points."""
    from importance_learning import cifar10_wrn

    result = cifar10_wrn.main(["--data-dir", str(cifar_dir), "--out", str(tmp_path), "--depth", "10",
                               "--width", "1", "--val-per-class", "100", "--batch-size", "50",
                               "--train-size", "400", "--test-size", "500", "--epochs", "3", "--seed", "0",
                               "--quiet"])
    m = result["metrics"]
    _check_importances(tmp_path, m, 400, 0.36)
    untrained, final = m["pretrain"]["test_accuracy_exact"], m["test_accuracy_exact"]
    # Measured (seeds 0 / 1 / 2; python -m importance_learning.cifar10_wrn --seed S <the flags above>):
    #   test accuracy of the untrained network -> after the 3 epochs: 8.4 -> 49.0, 8.4 -> 47.0,
    #   9.8 -> 48.8 % (gains 40.6, 38.6, 39.0); importances clean / corrupted 0.510 / 0.482,
    #   0.519 / 0.466, 0.509 / 0.485: no clear separation yet at 24 upper iterations, so only
    #   the accuracy is asserted. Chance is 10 %; a gain of 25 points is > 10 sd of an accuracy
    #   on 500 test points (~2.2) and 13 points below the smallest measured gain.
    assert final - untrained > 25.0
