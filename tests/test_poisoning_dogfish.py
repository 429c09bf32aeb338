"""Dog-fish loaders, InceptionV3 features, the TF1-RMSProp optimizer and the clean-label attack
end to end on a generated dog-fish-format file (random-weight InceptionV3, 75 x 75 images)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from penalty_tf.datasets import DataError, dogfish
from penalty_tf.optimizers import TF1RMSProp
from penalty_tf.paper.experiment import ExperimentError
from poisoning import clean_label

REPO = Path(__file__).resolve().parent.parent
SIZE = 75   # InceptionV3's smallest input


def make_dogfish(directory: Path, n_train=8, n_test=4, size=SIZE, seed=0, **overrides) -> Path:
    """A file in the format of Koh & Liang's dog-fish .npz: float images in [-1, 1], 0/1 labels."""
    rng = np.random.default_rng(seed)
    y_train, y_test = np.arange(n_train) % 2, np.arange(n_test) % 2

    def images(labels):
        x = rng.uniform(-0.3, 0.3, size=(len(labels), size, size, 3))
        x += np.where(labels == 1, 0.5, -0.5)[:, None, None, None]
        return np.clip(x, -1, 1).astype(np.float32)

    arrays = {"X_train": images(y_train), "Y_train": y_train, "X_test": images(y_test), "Y_test": y_test}
    arrays.update(overrides)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / dogfish.DOGFISH_FILE
    np.savez(path, **arrays)
    return path


def _run(module, args, env_extra=None):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)


# --------------------------------------------------------------------- TF1 RMSProp

def test_tf1_rmsprop_matches_a_hand_computed_update():
    import tensorflow as tf

    w = tf.Variable([1.0, -2.0])
    opt = TF1RMSProp([w], learning_rate=0.1)
    opt.apply([tf.constant([0.5, 0.0])])
    # ms = 0.9 * 1 + 0.1 * 0.25 = 0.925 (accumulator starts at ONE); w -= 0.1 * 0.5 / sqrt(0.925 + 1e-10)
    np.testing.assert_allclose(opt.ms[0].numpy(), [0.925, 0.9], rtol=1e-6)
    np.testing.assert_allclose(w.numpy(), [1.0 - 0.05 / np.sqrt(0.925), -2.0], rtol=1e-6)
    opt.apply([tf.constant([-1.0, 2.0])])
    ms2 = np.array([0.9 * 0.925 + 0.1 * 1.0, 0.9 * 0.9 + 0.1 * 4.0])
    np.testing.assert_allclose(opt.ms[0].numpy(), ms2, rtol=1e-6)
    expected = np.array([1.0 - 0.05 / np.sqrt(0.925) + 0.1 / np.sqrt(ms2[0]),
                         -2.0 - 0.2 / np.sqrt(ms2[1])])
    np.testing.assert_allclose(w.numpy(), expected, rtol=1e-6)
    # Keras' RMSprop (zeros init, epsilon outside the root) would move w[0] by
    # 0.1 * 0.5 / (sqrt(0.025) + 1e-7) = 0.316 on the first step, not 0.052.
    opt.reset()
    np.testing.assert_array_equal(opt.ms[0].numpy(), [1.0, 1.0])


def test_tf1_rmsprop_epsilon_is_inside_the_root():
    import tensorflow as tf

    w = tf.Variable([0.0])
    opt = TF1RMSProp([w], learning_rate=1.0, decay=0.0, epsilon=1e-2)
    opt.apply([tf.constant([0.1])])      # ms = 0.01: step = 0.1 / sqrt(0.01 + 0.01)
    np.testing.assert_allclose(w.numpy(), [-0.1 / np.sqrt(0.02)], rtol=1e-6)


# ------------------------------------------------------------------------- loaders

def test_dogfish_loader_validates(tmp_path):
    make_dogfish(tmp_path / "dogfish_dataset")          # the original's sub-directory
    data = dogfish.load_dogfish(tmp_path)
    assert data.x_train.shape == (8, SIZE, SIZE, 3) and data.y_test.tolist() == [0, 1, 0, 1]
    with pytest.raises(DataError, match="expected 299x299"):
        dogfish.load_dogfish(tmp_path, image_size=299)


@pytest.mark.parametrize("override,message", [
    ({"X_train": np.full((8, SIZE, SIZE, 3), 255.0, np.float32)}, r"in \[-1, 1\]"),
    ({"Y_train": np.arange(8)}, "labels 0/1"),
    ({"X_test": np.zeros((4, SIZE, SIZE), np.float32)}, "expected \\(N, S, S, 3\\)"),
    ({"Y_test": np.zeros(3, np.int64)}, "Y_test has shape"),
])
def test_malformed_dogfish_files_are_rejected(tmp_path, override, message):
    make_dogfish(tmp_path, **override)
    with pytest.raises(DataError, match=message):
        dogfish.load_dogfish(tmp_path)


def test_missing_and_corrupt_dogfish_files(tmp_path, monkeypatch):
    monkeypatch.delenv("PENALTY_TF_DATA", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    with pytest.raises(DataError, match="dataset_dog-fish_train-900_test-300.npz not found"):
        dogfish.load_dogfish(tmp_path / "nowhere")
    (tmp_path / dogfish.DOGFISH_FILE).write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(DataError, match="truncated or not an .npz"):
        dogfish.load_dogfish(tmp_path)
    np.savez(tmp_path / dogfish.DOGFISH_FILE, X_train=np.zeros((2, 75, 75, 3), np.float32))
    with pytest.raises(DataError, match="keys .* missing"):
        dogfish.load_dogfish(tmp_path)


def test_feature_files_are_checked(tmp_path):
    make_dogfish(tmp_path)
    with pytest.raises(DataError, match="poisoning.extract_features"):
        dogfish.load_features(tmp_path, 8, 4)
    train, test = dogfish.feature_paths(tmp_path)
    np.save(train, np.zeros((8, 2048)))
    np.save(test, np.zeros((5, 2048)))
    with pytest.raises(DataError, match=r"expected \(4, 2048\)"):
        dogfish.load_features(tmp_path, 8, 4)


def test_missing_or_bad_inception_weights(tmp_path):
    from poisoning.inception import feature_model

    with pytest.raises(ExperimentError, match="no such file"):
        feature_model(str(tmp_path / "absent.h5"), SIZE)
    bad = tmp_path / "bad.weights.h5"
    bad.write_bytes(b"this is not HDF5")
    with pytest.raises(ExperimentError, match="could not load"):
        feature_model(str(bad), SIZE)
    with pytest.raises(ExperimentError, match="at least 75x75"):
        feature_model(None, 32)


def test_cli_errors_exit_cleanly(tmp_path):
    proc = _run("poisoning.extract_features", ["--data-dir", str(tmp_path / "nowhere")],
                {"PENALTY_TF_DATA": str(tmp_path / "empty"), "KERAS_HOME": str(tmp_path / "k")})
    assert proc.returncode == 2 and "dog-fish" in proc.stderr and "Traceback" not in proc.stderr
    make_dogfish(tmp_path)
    proc = _run("poisoning.extract_features", ["--data-dir", str(tmp_path), "--weights",
                                               str(tmp_path / "missing.h5")])
    assert proc.returncode == 2 and "no such file" in proc.stderr and "Traceback" not in proc.stderr
    proc = _run("poisoning.clean_label", ["--data-dir", str(tmp_path), "--weights", "none"])
    assert proc.returncode == 2 and "extract_features" in proc.stderr and "Traceback" not in proc.stderr


# ---------------------------------------------------------------- target selection

def test_target_and_base_selection():
    preds, labels = np.array([1, 0, 1, 1]), np.array([0, 0, 1, 0])
    assert clean_label.next_target(preds, labels, 0) == 1
    assert clean_label.next_target(preds, labels, 2) == 2
    assert clean_label.next_target(preds, labels, 3) is None
    feats = np.array([[0.0, 0.0], [1.0, 0.0], [0.1, 0.0], [0.5, 0.0]])
    train_labels = np.array([0, 1, 0, 1])
    # Closest training point of the OTHER class: index 3 (0.5 away), not 2 (same class).
    assert clean_label.closest_base(feats, train_labels, np.array([0.05, 0.0]), 0) == (3, pytest.approx(0.45))


# ------------------------------------------------------------------ end to end

def _random_inception_weights(root: Path, path: Path) -> None:
    """Random InceptionV3 weights whose BatchNorm statistics are those of the generated
    images (plain random weights give nearly constant features: every image alike)."""
    import keras

    model = keras.applications.InceptionV3(include_top=False, weights=None,
                                           input_shape=(SIZE, SIZE, 3), pooling="avg")
    # Weights from a seeded NumPy stream (He-normal kernels), independent of Keras' global
    # random state, so that the test sees the same network whatever ran before it.
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            kernel = layer.kernel
            fan_in = int(np.prod(kernel.shape[:-1]))
            kernel.assign(rng.normal(0, np.sqrt(2.0 / fan_in), kernel.shape).astype(np.float32))
    data = dogfish.load_dogfish(root)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.0            # moving statistics := this batch's statistics
    model(np.concatenate([data.x_train, data.x_test]), training=True)
    model.save_weights(path)


@pytest.fixture(scope="module")
def dogfish_run(tmp_path_factory):
    from poisoning import extract_features

    root = tmp_path_factory.mktemp("dogfish")
    make_dogfish(root)
    weights = root / "inception_random.weights.h5"
    _random_inception_weights(root, weights)
    extracted = extract_features.main(["--data-dir", str(root), "--weights", str(weights),
                                       "--batch-size", "3", "--quiet"])
    out = root / "run"
    result = clean_label.main(["--data-dir", str(root), "--weights", str(weights), "--targets", "50",
                               "--epochs", "4", "--lower-steps", "2", "--train-steps", "100",
                               "--lr-u", "0.05", "--quiet", "--out", str(out)])
    return root, extracted, out, result


def test_extract_features_writes_both_files(dogfish_run):
    root, extracted, _, _ = dogfish_run
    train = np.load(root / dogfish.TRAIN_FEATURES)
    test = np.load(root / dogfish.TEST_FEATURES)
    assert train.shape == (8, 2048) and test.shape == (4, 2048) and train.dtype == np.float64
    assert np.all(np.isfinite(train)) and train.std(axis=0).mean() > 0.1   # images differ
    # Batched extraction equals one forward pass over the whole set (remainder included).
    from poisoning.inception import feature_model

    model = feature_model(str(root / "inception_random.weights.h5"), SIZE)
    x = dogfish.load_dogfish(root).x_train
    np.testing.assert_allclose(train, model(x, training=False).numpy(), rtol=1e-3, atol=1e-3)


def test_clean_label_end_to_end(dogfish_run):
    root, _, out, result = dogfish_run
    assert json.loads((out / "result.json").read_text()) == result
    m = result["metrics"]
    assert result["experiment"] == "poisoning.clean_label" and result["published"]["mean"] == 100.0
    # 50 targets asked, only 4 test images: the run stops cleanly when none remains.
    assert 1 <= m["attempted"] <= 4 and "no correctly classified test image" in m["stop_reason"]
    assert m["success_rate"] == pytest.approx(100.0 * m["found"] / m["attempted"])
    data = dogfish.load_dogfish(root)
    indices = [t["target_index"] for t in m["targets"]]
    assert indices == sorted(set(indices))                      # increasing, no repeats
    for t in m["targets"]:
        assert data.y_train[t["base_index"]] != t["target_label"]   # base from the other class
        assert t["poison_pixel_change_max"] > 0.0
        # Penalty restarts per target (rho0 = lambda0 = eps0 = 1): k convergence events among
        # its 4 updates leave rho = 1.1^k, lambda = eps = 0.9^k (measured k = 0: hu ~ 1e15).
        k = round(np.log(t["final"]["rho"]) / np.log(1.1))
        assert 0 <= k <= 4
        assert (t["final"]["rho"], t["final"]["lamb"], t["final"]["eps"]) == \
            pytest.approx((1.1 ** k, 0.9 ** k, 0.9 ** k), rel=1e-5)
    # The attacker's direction: with the optimised poison the retrained classifier puts more
    # probability on the target's wrong class than with the unmodified base image.
    assert m["mean_wrong_class_prob_lift"] > 0
    with np.load(out / "triples.npz") as z:
        assert len(z["poisoned_instances"]) == m["found"]
        assert len(z["unsuccessful"]) == m["attempted"] - m["found"]
        if m["found"]:
            p = z["poisoned_instances"]
            lo, hi = (data.x_train.min() + 1) / 2, (data.x_train.max() + 1) / 2
            assert p.min() >= lo - 1e-6 and p.max() <= hi + 1e-6       # the projection
    assert (out / "triples.png").read_bytes().startswith(b"\x89PNG")


def test_clean_label_kill_at_a_random_update_and_resume(dogfish_run, tmp_path, random_stop):
    # Subprocesses with deterministic kernels without oneDNN: InceptionV3's gradients are
    # otherwise not reproducible bit for bit from one process to the next.
    root = dogfish_run[0]
    env = {"TF_DETERMINISTIC_OPS": "1", "TF_ENABLE_ONEDNN_OPTS": "0"}
    argv = ["--data-dir", str(root), "--weights", str(root / "inception_random.weights.h5"),
            "--targets", "50", "--epochs", "4", "--lower-steps", "2", "--train-steps", "100",
            "--lr-u", "0.05", "--quiet"]
    # Uninterrupted, one graph call per target; the cut run checkpoints every 3 updates.
    assert _run("poisoning.clean_label", argv + ["--out", str(tmp_path / "full")], env).returncode == 0
    cut = argv + ["--out", str(tmp_path / "cut"), "--checkpoint-every", "3"]
    stop = random_stop(1, 12)   # 3 or 4 targets x 4 updates
    proc = _run("poisoning.clean_label", cut + ["--stop-after", str(stop)], env)
    assert proc.returncode == 0 and (tmp_path / "cut" / "checkpoint" / "run.json").is_file(), proc.stderr
    assert _run("poisoning.clean_label", cut + ["--resume"], env).returncode == 0
    full, resumed = (json.loads((tmp_path / d / "result.json").read_text())["metrics"] for d in ("full", "cut"))
    full.pop("timings"), resumed.pop("timings")
    assert resumed == full, f"stopped after {stop}"
    with np.load(tmp_path / "full" / "triples.npz") as a, np.load(tmp_path / "cut" / "triples.npz") as b:
        for key in a.files:
            np.testing.assert_array_equal(a[key], b[key])
