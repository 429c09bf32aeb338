"""Both few-shot scripts end to end at a tiny budget on generated files in the real formats,
and --resume equal to an uninterrupted run."""

import json

import numpy as np
import pytest

from few_shot import fake_data, miniimagenet, omniglot, omniglot_build
from penalty_tf.paper.experiment import ExperimentError

TINY = ["--nway", "3", "--kshot", "1", "--meta-batch", "2", "--test-tasks", "3", "--test-steps", "3",
        "--lower-steps", "2", "--linear-steps", "2", "--query-per-class", "3", "--quiet"]


@pytest.fixture(scope="module")
def omniglot_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("omniglot")
    fake_data.write_omniglot_tree(root / "omniglot_resized", alphabets=2, characters=3, images=5)
    omniglot_build.main(["--images", str(root / "omniglot_resized"), "--out", str(root / "data"), "--quiet"])
    return root / "data"


def _omniglot(data, out, *extra):
    return omniglot.main(["--data-dir", str(data), "--out", str(out), "--filters", "4",
                          "--train-characters", "4", *TINY, *extra])


@pytest.mark.parametrize("method", ["penalty", "approxgrad"])
def test_omniglot_end_to_end(omniglot_dir, tmp_path, method):
    result = _omniglot(omniglot_dir, tmp_path, "--method", method, "--iterations", "3", "--eval-every", "2")
    on_disk = json.loads((tmp_path / "result.json").read_text())
    assert on_disk == result
    evals = result["metrics"]["evaluations"]
    assert [e["iteration"] for e in evals] == [2, 3]                  # every 2 and at the end
    with np.load(tmp_path / "accuracies.npz") as accs:
        per_task = {e["iteration"]: accs[f"iteration_{e['iteration']}"] for e in evals}
    for e in evals:
        accs = per_task[e["iteration"]]
        # each task's accuracy is over its 3 x 3 query images; the summary is of those
        np.testing.assert_allclose(accs * 9, np.round(accs * 9), atol=1e-5)
        assert e["tasks"] == 3 and e["acc_mean"] == pytest.approx(100 * accs.mean())
        assert e["acc_sd"] == pytest.approx(100 * accs.std(ddof=1))
        assert e["acc_ci95"] == pytest.approx(1.96 * e["acc_sd"] / np.sqrt(3))
    assert result["published"] == {}                                  # the paper has no 3-way row
    assert result["config"]["test_lr"] == (1e-3 if method == "penalty" else 1e-2)
    assert (tmp_path / "accuracy.png").stat().st_size > 1000
    with np.load(tmp_path / "accuracies.npz") as accs:
        assert sorted(accs.files) == ["iteration_2", "iteration_3"] and accs["iteration_3"].shape == (3,)


def test_omniglot_defaults_follow_the_original():
    args = omniglot.build_parser().parse_args([])
    omniglot.resolve_defaults(args)
    assert (args.nway, args.kshot, args.iterations, args.meta_batch) == (20, 5, 10000, 15)
    assert (args.lr_u, args.lr_v, args.lr_p, args.lower_steps, args.test_tasks) == (1e-2, 1e-2, 1e-2, 20, 600)
    args = omniglot.build_parser().parse_args(["--nway", "5", "--kshot", "1"])
    omniglot.resolve_defaults(args)
    assert (args.iterations, args.meta_batch) == (5000, 30)
    args = miniimagenet.build_parser().parse_args(["--method", "approxgrad"])
    miniimagenet.resolve_defaults(args)
    assert (args.kshot, args.iterations, args.meta_batch, args.lr_u) == (1, 20001, 2, 1e-3)
    args = miniimagenet.build_parser().parse_args(["--kshot", "5", "--method", "approxgrad"])
    miniimagenet.resolve_defaults(args)
    assert args.iterations == 10001
    args = miniimagenet.build_parser().parse_args([])
    miniimagenet.resolve_defaults(args)
    assert (args.kshot, args.iterations, args.filters, args.features) == (5, 20001, [64, 96, 128, 256], 384)


def test_miniimagenet_end_to_end(tmp_path):
    data = fake_data.write_miniimagenet_pickles(tmp_path / "data" / "dataset_miniimagenet",
                                                images_per_class=16, classes={"train": 6, "test": 5})
    result = miniimagenet.main(["--data-dir", str(data.parent), "--out", str(tmp_path / "run"),
                                "--images-per-class", "16", "--filters", "2", "2", "2", "2",
                                "--hidden", "4", "--features", "4", "--method", "penalty",
                                "--iterations", "2", "--eval-every", "2", *TINY, "--nway", "5"])
    assert [e["iteration"] for e in result["metrics"]["evaluations"]] == [2]
    assert result["experiment"] == "few_shot.miniimagenet" and result["config"]["kshot"] == 1
    # Table 4, Mini-ImageNet 5-way 1-shot, Penalty: 53.17 +- 0.96 (95 % CI)
    assert (result["published"]["mean"], result["published"]["spread"]) == (53.17, "ci95")
    assert result["metrics"]["evaluations"][0]["tasks"] == 3


def test_resume_equals_uninterrupted(omniglot_dir, tmp_path):
    common = ["--method", "approxgrad", "--eval-every", "2", "--seed", "3"]
    full = _omniglot(omniglot_dir, tmp_path / "full", *common, "--iterations", "4")
    _omniglot(omniglot_dir, tmp_path / "cut", *common, "--iterations", "2")
    resumed = _omniglot(omniglot_dir, tmp_path / "cut", *common, "--iterations", "4", "--resume")
    strip = ("eval_seconds", "train_seconds")
    a = [{k: v for k, v in e.items() if k not in strip} for e in full["metrics"]["evaluations"]]
    b = [{k: v for k, v in e.items() if k not in strip} for e in resumed["metrics"]["evaluations"]]
    assert a == b and len(a) == 2
    with np.load(tmp_path / "full" / "checkpoint.npz") as x, np.load(tmp_path / "cut" / "checkpoint.npz") as y:
        names = [n for n in x.files if n != "meta"]
        assert len(names) > 20
        for n in names:
            np.testing.assert_array_equal(x[n], y[n])
    with pytest.raises(ExperimentError, match="other settings"):
        _omniglot(omniglot_dir, tmp_path / "cut", "--method", "penalty", "--eval-every", "2",
                  "--seed", "3", "--iterations", "5", "--resume")


def test_bad_input_is_a_clean_error(omniglot_dir, tmp_path):
    with pytest.raises(ExperimentError, match="--iterations must be >= 1"):
        _omniglot(omniglot_dir, tmp_path, "--iterations", "0")
    with pytest.raises(ExperimentError, match="--train-characters"):
        omniglot.main(["--data-dir", str(omniglot_dir), "--train-characters", "6", *TINY])
    with pytest.raises(ExperimentError, match="not found"):
        omniglot.main(["--data-dir", str(tmp_path / "nothing"), *TINY])
    with pytest.raises(ExperimentError, match="fewer than K"):
        _omniglot(omniglot_dir, tmp_path, "--kshot", "4")
