"""Omniglot builder/loader and Mini-ImageNet pickle loader on generated files in the real formats."""

import pickle

import numpy as np
import pytest
from PIL import Image

from few_shot import fake_data, omniglot_build
from penalty_tf.datasets import DataError
from penalty_tf.datasets import miniimagenet as mi
from penalty_tf.datasets import omniglot as om


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return fake_data.write_omniglot_tree(tmp_path_factory.mktemp("om") / "omniglot_resized",
                                         alphabets=2, characters=3, images=4)


def test_builder_rotations_labels_and_sorted_order(tree, tmp_path):
    result = omniglot_build.main(["--images", str(tree), "--out", str(tmp_path), "--quiet"])
    assert result["images"] == 2 * 3 * 4 * 4 and result["classes"] == 24
    data = om.load_omniglot(tmp_path)
    assert data.x.shape == (96, 28, 28, 1) and data.x.dtype == np.float32 and data.y.dtype == np.int32
    # class id = 4 x character + rotation; each class holds the character's 4 images
    np.testing.assert_array_equal(data.y, np.repeat(np.arange(24), 4))
    # sorted listing: class 0 is Alphabet_00/character01, image 1000_01.png (created last)
    first = np.asarray(Image.open(tree / "Alphabet_00" / "character01" / "1000_01.png"), np.float32)
    np.testing.assert_allclose(data.x[0, :, :, 0], 1.0 - first / 255.0)
    last_char = np.asarray(Image.open(tree / "Alphabet_01" / "character03" / "1003_04.png"), np.float32)
    np.testing.assert_allclose(data.x[4 * 20 + 3, :, :, 0], 1.0 - last_char / 255.0)
    # rotations 90, 180, 270 degrees of the same images (exact grid rotations up to spline rounding)
    for r in (1, 2, 3):
        np.testing.assert_allclose(data.x[4 * r:4 * r + 4, :, :, 0], np.rot90(data.x[0:4, :, :, 0], r, axes=(1, 2)),
                                   atol=1e-4)
    # strokes (dark pixels) are 1, background 0
    assert set(np.unique(np.round(data.x[:4], 3))) <= {0.0, 1.0}


def test_builder_errors(tmp_path):
    with pytest.raises(DataError, match="not a directory"):
        om.build_omniglot_arrays(tmp_path / "missing")
    (tmp_path / "A" / "c1").mkdir(parents=True)
    with pytest.raises(DataError, match="no .png"):
        om.build_omniglot_arrays(tmp_path)
    Image.fromarray(np.zeros((30, 28), np.uint8)).save(tmp_path / "A" / "c1" / "x.png")
    with pytest.raises(DataError, match="28x28"):
        om.build_omniglot_arrays(tmp_path)
    (tmp_path / "A" / "c1" / "x.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="not a readable image"):
        om.build_omniglot_arrays(tmp_path)


def test_omniglot_loader_errors(tmp_path):
    with pytest.raises(DataError, match="(?s)x_omniglot_1.npy not found.*omniglot_build"):
        om.load_omniglot(tmp_path)
    x = np.zeros((8, 28, 28, 1), np.float32)
    y = np.repeat(np.arange(4), 2).astype(np.int32)
    np.save(tmp_path / om.X_FILE, x.astype(np.float64))
    np.save(tmp_path / om.Y_FILE, y)
    with pytest.raises(DataError, match="float32"):
        om.load_omniglot(tmp_path)
    np.save(tmp_path / om.X_FILE, x[:, :27])
    with pytest.raises(DataError, match="expected \\(n, 28, 28, 1\\)"):
        om.load_omniglot(tmp_path)
    np.save(tmp_path / om.X_FILE, x)
    np.save(tmp_path / om.Y_FILE, y[:7])
    with pytest.raises(DataError, match="to match"):
        om.load_omniglot(tmp_path)
    np.save(tmp_path / om.Y_FILE, np.repeat(np.arange(3), [3, 3, 2]).astype(np.int32))
    with pytest.raises(DataError, match="multiple of 4"):
        om.load_omniglot(tmp_path)
    np.save(tmp_path / om.Y_FILE, y)
    raw = (tmp_path / om.X_FILE).read_bytes()
    (tmp_path / om.X_FILE).write_bytes(raw[:len(raw) // 2])
    with pytest.raises(DataError, match="truncated"):
        om.load_omniglot(tmp_path)


def test_miniimagenet_pickles_latin1_float_and_labels(tmp_path):
    fake_data.write_miniimagenet_pickles(tmp_path / "dataset_miniimagenet", images_per_class=17)
    train = mi.load_miniimagenet_split("train", tmp_path, images_per_class=17)  # found in the subdir
    assert train.images.shape == (6 * 17, 84, 84, 3) and train.images.dtype == np.uint8
    np.testing.assert_array_equal(train.labels, np.repeat(np.arange(6), 17))
    # a Python 2 style pickle (str keys as bytes-compatible latin1) loads with encoding latin1
    with open(tmp_path / "py2.pkl", "wb") as handle:
        pickle.dump({"image_data": train.images[:17]}, handle, protocol=2)
    assert mi.read_miniimagenet_pickle(tmp_path / "py2.pkl", images_per_class=17).images.shape[0] == 17
    # images become float32 / 255 only when sampled
    from few_shot.tasks import Split
    x = Split(train.images, train.labels, np.arange(6)).gather(np.array([[0, 17]]))
    assert x.dtype == np.float32 and x.shape == (1, 2, 84, 84, 3)
    np.testing.assert_allclose(x[0, 1], train.images[17] / 255.0, rtol=1e-6)


def test_miniimagenet_errors(tmp_path):
    with pytest.raises(DataError, match="(?s)mini-imagenet-cache-test.pkl not found.*few-shot-ssl-public"):
        mi.load_miniimagenet_split("test", tmp_path)
    rng = np.random.default_rng(0)
    good = fake_data.miniimagenet_dict(3, 4, rng)

    def write(obj):
        with open(tmp_path / "f.pkl", "wb") as handle:
            pickle.dump(obj, handle)
        return tmp_path / "f.pkl"

    bad_dict = dict(good, class_dict=dict(good["class_dict"]))
    bad_dict["class_dict"]["n00000000"], bad_dict["class_dict"]["n00000001"] = [0, 1, 2, 4], [3, 5, 6, 7]
    cases = [({"images": good["image_data"]}, "key 'image_data'"),
             (dict(good, image_data=good["image_data"].astype(np.float32)), "uint8"),
             (dict(good, image_data=good["image_data"][:, :80]), "expected \\(n, 84, 84, 3\\)"),
             ({"image_data": good["image_data"][:10]}, "multiple of 4"),
             (bad_dict, "not one contiguous block")]
    for obj, message in cases:
        with pytest.raises(DataError, match=message):
            mi.read_miniimagenet_pickle(write(obj), images_per_class=4)
    assert mi.read_miniimagenet_pickle(write(good), images_per_class=4).labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    raw = (tmp_path / "f.pkl").read_bytes()
    (tmp_path / "f.pkl").write_bytes(raw[: len(raw) // 3])
    with pytest.raises(DataError, match="truncated"):
        mi.read_miniimagenet_pickle(tmp_path / "f.pkl", images_per_class=4)
