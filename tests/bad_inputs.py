"""The bad-input catalogue (issue 14, part 8): bad flags, data files, ``--out`` and ``--resume``
problems and NaN runs thrown at every script, and bad arguments thrown at the library, each
with the answer it must get.

    python3 tests/bad_inputs.py --census              # every case: its class, a table, the counts
    python3 tests/bad_inputs.py --census --only ID..  # some cases
    python3 tests/bad_inputs.py --list                # the cases
    PYTHONPATH=/other/tree python3 tests/bad_inputs.py --census   # against another tree

A script case (`Case`) runs ``python -m <module> <argv>`` in this process (``main(argv)``
inside the module's own entry point, `penalty_tf.paper.experiment.run_main` for most;
stdout and stderr captured), or in a subprocess when ``subprocess=True``. Each case gets a
fresh directory holding what ``{out}`` points to (nothing, a file, a previous run's result
or a copy of a stopped run, see `Case.out`); data files are generated once per session
(`DATA`; ``{mnist}`` is the real MNIST of ``$PENALTY_TF_DATA``). During a case
``PENALTY_TF_DATA`` and ``KERAS_HOME`` point to empty folders, so only ``--data-dir`` is found.

`classify` returns one of:

* ``clean``: the exit status is the expected one (2: ``error: ...`` or argparse's usage
  error), stderr contains the case's ``message`` (the substring that names the fix), there
  is no traceback, and the case's directory holds no new file and no changed or deleted one
  (new empty folders are tolerated);
* ``traceback``: an exception escaped, or stderr shows a traceback;
* ``silent``: the input was accepted (exit status 0);
* ``unclear``: refused, but with another status, without the message, or after writing or
  changing files.

A library case (`LibraryCase`) calls a function and expects an exception of a type whose
message contains ``message``: clean / traceback (another exception) / silent (none) /
unclear (the right type, not the message).

``area`` says whose code a case exercises: ``flags`` and ``data`` (the scripts' flag checks,
`penalty_tf.paper.settings`, the loaders), ``out`` (``--out`` checks), ``resume``
(checkpoints and resume consistency), ``nan`` (NonFiniteError reporting), ``config`` (the
solver configs' own validation, turned into a flag error by `settings.resolve`),
``library`` (solver constructors, ``run()`` inputs, callbacks) and ``tools``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import importlib
import io
import os
import pickle
import shutil
import subprocess as subprocesses
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np


def _tree() -> Path:
    """The tree under test: the first ``PYTHONPATH`` entry holding ``penalty_tf``, else this
    repository."""
    for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep):
        if entry and (Path(entry) / "penalty_tf" / "__init__.py").is_file():
            return Path(entry).resolve()
    return Path(__file__).resolve().parent.parent


TREE = _tree()
if str(TREE) not in sys.path:
    sys.path.insert(0, str(TREE))

CLEAN, TRACEBACK, SILENT, UNCLEAR = "clean", "traceback", "silent", "unclear"
CLASSES = (CLEAN, TRACEBACK, SILENT, UNCLEAR)
#: Modules whose ``__main__`` is ``sys.exit(main())`` (or plain ``main()``), not ``run_main(main)``.
EXIT_ENTRY = ("penalty_tf.paper.report", "penalty_tf.paper.reproduce", "penalty_tf.paper.evidence")


@dataclasses.dataclass(frozen=True)
class Case:
    """One bad input to a script.

    ``argv`` may name ``{out}`` (the case's output path) and data sets of `DATA`
    (``{mnist}``, ``{omniglot_255}`` ...). ``out`` is what ``{out}`` is before the run:
    ``"absent"`` (nothing), ``"file"`` (a file), ``"under_file"`` (a path below a file),
    ``"previous"`` (a folder with an earlier result.json), or the name of a `PREPARED`
    stopped run, copied; ``damage(out)`` is then applied to the copy. With ``untouched``
    (all but the NaN cases, which keep the checkpoint of the last finished step) whatever it
    is must be left as it was.
    """

    id: str
    module: str
    argv: tuple
    message: str
    expect: int = 2
    out: str = "absent"
    damage: Optional[Callable[[Path], None]] = None
    area: str = "flags"
    subprocess: bool = False
    untouched: bool = True

    @property
    def needs_mnist(self) -> bool:
        text = " ".join(self.argv)
        return "{mnist}" in text or "{mnist_truncated}" in text or \
            (self.out in PREPARED and "{mnist}" in " ".join(PREPARED[self.out][1]))


@dataclasses.dataclass(frozen=True)
class LibraryCase:
    """One bad argument to the library: ``call()`` must raise ``exception`` with ``message``
    in its text."""

    id: str
    call: Callable[[], Any]
    exception: type
    message: str
    area: str = "library"
    needs_mnist: bool = False


@dataclasses.dataclass
class Outcome:
    kind: str
    detail: str
    seconds: float = 0.0


# ------------------------------------------------------------------------------ the data


def _omniglot_arrays(characters: int = 6, images: int = 5, seed: int = 0):
    """Omniglot-format arrays: float32 (n, 28, 28, 1) strokes 1 on background 0, 4 classes per
    character (rotations)."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for c in range(characters):
        stroke = rng.random((images, 28, 28)) < 0.1 + 0.02 * c
        for r in range(4):
            xs.append(np.rot90(stroke, k=r, axes=(1, 2)).astype(np.float32))
            ys.append(np.full(images, 4 * c + r, np.int32))
    return np.concatenate(xs)[..., None], np.concatenate(ys)


def _save_omniglot(path: Path, x, y) -> None:
    path.mkdir(parents=True, exist_ok=True)
    np.save(path / "x_omniglot_1.npy", x)
    np.save(path / "y_omniglot_1.npy", y)


def _truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])


def make_mnist(ctx: "Context", path: Path) -> None:
    path.mkdir(parents=True)
    (path / "mnist.npz").symlink_to(ctx.mnist_file())


def make_mnist_truncated(ctx: "Context", path: Path) -> None:
    path.mkdir(parents=True)
    data = ctx.mnist_file().read_bytes()
    (path / "mnist.npz").write_bytes(data[:len(data) // 2])


def make_omniglot(ctx, path, transform=lambda x, y: (x, y)) -> None:
    _save_omniglot(path, *transform(*_omniglot_arrays()))


def _write_cifar(path: Path, n_batch: int = 60, n_test: int = 50, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    path.mkdir(parents=True, exist_ok=True)
    for name, n in [(f"data_batch_{i}", n_batch) for i in range(1, 6)] + [("test_batch", n_test)]:
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 b"labels": [int(v) for v in np.arange(n) % 10]}
        with open(path / name, "wb") as handle:
            pickle.dump(batch, handle, protocol=2)


def make_cifar(ctx, path) -> None:
    _write_cifar(path)


def make_cifar_truncated(ctx, path) -> None:
    _write_cifar(path)
    _truncate(path / "data_batch_3")


def _write_svhn_grey(path: Path, scale: float = 1.0, labels: Optional[Callable] = None) -> None:
    import h5py

    rng = np.random.default_rng(0)
    path.mkdir(parents=True, exist_ok=True)
    with h5py.File(path / "SVHN_single_grey_without_extra.h5", "w") as h5:
        for split, n in (("train", 200), ("val", 50), ("test", 60)):
            y = np.eye(10)[np.arange(n) % 10]
            h5.create_dataset(f"X_{split}", data=(rng.uniform(0, 255, (n, 32, 32, 1)) * scale).astype(np.float32))
            h5.create_dataset(f"y_{split}", data=labels(y) if labels else y)


def make_svhn(ctx, path) -> None:
    _write_svhn_grey(path)


def make_svhn_scaled(ctx, path) -> None:
    _write_svhn_grey(path, scale=1 / 255)


def make_svhn_labels(ctx, path) -> None:
    _write_svhn_grey(path, labels=lambda y: 2 * y)


def _write_svhn_mats(path: Path, first_label: int = 1) -> None:
    from scipy import io as sio

    rng = np.random.default_rng(0)
    path.mkdir(parents=True, exist_ok=True)
    for name, n in (("train_32x32.mat", 60), ("test_32x32.mat", 20)):
        sio.savemat(path / name, {"X": rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8),
                                  "y": (first_label + np.arange(n) % 10).astype(np.uint8).reshape(-1, 1)})


def make_svhn_mats(ctx, path) -> None:
    _write_svhn_mats(path)


def make_svhn_mats_truncated(ctx, path) -> None:
    _write_svhn_mats(path)
    _truncate(path / "train_32x32.mat")


def make_svhn_mats_labels(ctx, path) -> None:
    _write_svhn_mats(path, first_label=0)


def _write_dogfish(path: Path, scale: float = 1.0, features: bool = True, size: int = 75) -> None:
    rng = np.random.default_rng(0)
    path.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split, n in (("train", 8), ("test", 4)):
        y = np.arange(n) % 2
        x = rng.uniform(-0.3, 0.3, (n, size, size, 3)) + np.where(y == 1, 0.5, -0.5)[:, None, None, None]
        arrays.update({f"X_{split}": (np.clip(x, -1, 1) * scale).astype(np.float32), f"Y_{split}": y})
        if features:
            np.save(path / f"X_{split}_features_inception.npy", rng.normal(size=(n, 2048)))
    np.savez(path / "dataset_dog-fish_train-900_test-300.npz", **arrays)


def make_dogfish(ctx, path) -> None:
    _write_dogfish(path)


def make_dogfish_255(ctx, path) -> None:
    _write_dogfish(path, scale=127.5)


def make_dogfish_no_features(ctx, path) -> None:
    _write_dogfish(path, features=False)


def _write_miniimagenet(path: Path, dtype=np.uint8, truncate: bool = False) -> None:
    rng = np.random.default_rng(0)
    path.mkdir(parents=True, exist_ok=True)
    for split, classes in (("train", 6), ("test", 5)):
        images = rng.integers(0, 256, (classes * 16, 84, 84, 3)).astype(dtype)
        data = {"image_data": images,
                "class_dict": {f"n{k:08d}": list(range(16 * k, 16 * (k + 1))) for k in range(classes)}}
        file = path / f"mini-imagenet-cache-{split}.pkl"
        with open(file, "wb") as handle:
            pickle.dump(data, handle, protocol=2)
        if truncate:
            _truncate(file)


def make_miniimagenet(ctx, path) -> None:
    _write_miniimagenet(path)


def make_miniimagenet_truncated(ctx, path) -> None:
    _write_miniimagenet(path, truncate=True)


def make_miniimagenet_float(ctx, path) -> None:
    _write_miniimagenet(path, dtype=np.float32)


def _write_pngs(path: Path, size: int = 28) -> None:
    from PIL import Image

    folder = path / "Alphabet_01" / "character01"
    folder.mkdir(parents=True)
    for i in range(2):
        Image.fromarray(np.full((size, size), 255, np.uint8), mode="L").save(folder / f"{i}.png")


def make_png_tree_32(ctx, path) -> None:
    _write_pngs(path, size=32)


def make_empty(ctx, path) -> None:
    path.mkdir(parents=True)


def make_a_file(ctx, path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("not a folder\n")


#: Data sets by name: ``fn(context, path)`` writes them at ``path`` (once per session).
DATA: dict[str, Callable[["Context", Path], None]] = {
    "mnist": make_mnist,
    "mnist_truncated": make_mnist_truncated,
    "omniglot": make_omniglot,
    "omniglot_255": lambda c, p: make_omniglot(c, p, lambda x, y: (x * 255, y)),
    "omniglot_inverted": lambda c, p: make_omniglot(c, p, lambda x, y: (1 - x, y)),
    "omniglot_negative_ids": lambda c, p: make_omniglot(c, p, lambda x, y: (x, y - 1)),
    "omniglot_truncated": lambda c, p: (make_omniglot(c, p), _truncate(p / "x_omniglot_1.npy")),
    "cifar": make_cifar,
    "cifar_truncated": make_cifar_truncated,
    "svhn": make_svhn,
    "svhn_scaled": make_svhn_scaled,
    "svhn_labels": make_svhn_labels,
    "svhn_mats": make_svhn_mats,
    "svhn_mats_truncated": make_svhn_mats_truncated,
    "svhn_mats_labels": make_svhn_mats_labels,
    "dogfish": make_dogfish,
    "dogfish_255": make_dogfish_255,
    "dogfish_no_features": make_dogfish_no_features,
    "miniimagenet": make_miniimagenet,
    "miniimagenet_truncated": make_miniimagenet_truncated,
    "miniimagenet_float": make_miniimagenet_float,
    "png_tree_32": make_png_tree_32,
    "empty": make_empty,
    "a_file": make_a_file,
}


# --------------------------------------------------------------- tiny runs of every script

MNIST_SMALL = ("--data-dir", "{mnist}", "--out", "{out}", "--train-size", "200", "--test-size", "100",
               "--batch-size", "100", "--epochs", "1", "--pretrain-epochs", "1", "--lower-steps", "1",
               "--retrain-epochs", "1", "--quiet")
MNIST_CNN = ("--data-dir", "{mnist}", "--out", "{out}", "--train-size", "200", "--test-size", "100",
             "--batch-size", "100", "--epochs", "1", "--pretrain-epochs", "1", "--lower-steps", "1", "--quiet")
CIFAR = ("--data-dir", "{cifar}", "--out", "{out}", "--val-size", "100", "--train-size", "100", "--test-size",
         "50", "--batch-size", "50", "--epochs", "1", "--pretrain-epochs", "1", "--lower-steps", "1", "--quiet")
SVHN = ("--data-dir", "{svhn}", "--out", "{out}", "--train-size", "100", "--test-size", "50", "--batch-size",
        "50", "--epochs", "1", "--pretrain-epochs", "1", "--lower-steps", "1", "--quiet")
FEW_SHOT = ("--out", "{out}", "--nway", "3", "--kshot", "1", "--meta-batch", "2", "--test-tasks", "3",
            "--test-steps", "2", "--lower-steps", "2", "--linear-steps", "2", "--query-per-class", "3",
            "--iterations", "2", "--eval-every", "2", "--quiet")
OMNIGLOT = ("--data-dir", "{omniglot}", "--filters", "4", "--train-characters", "4") + FEW_SHOT
MINI = ("--data-dir", "{miniimagenet}", "--images-per-class", "16", "--filters", "2", "2", "2", "2",
        "--hidden", "4", "--features", "4") + FEW_SHOT
SYNTHETIC = ("--example", "SMD20", "--method", "gd", "--lower-steps", "1", "--epochs", "5", "--trials", "1",
             "--record-every", "2", "--dim", "2", "--no-xla", "--quiet", "--out", "{out}")
POISON = ("--data-dir", "{mnist}", "--out", "{out}", "--npoison", "10", "--epochs", "2", "--lower-steps", "1",
          "--retrain-steps", "5", "--quiet")
CLEAN_LABEL = ("--data-dir", "{dogfish}", "--out", "{out}", "--weights", "none", "--epochs", "2",
               "--lower-steps", "1", "--train-steps", "5", "--targets", "1", "--quiet")


def _set(base: tuple, *pairs: Any) -> tuple:
    """``base`` with ``--flag value`` pairs replaced (or appended); a lone flag is appended; a
    tuple value replaces as many values (``nargs``)."""
    out = list(base)
    i = 0
    while i < len(pairs):
        flag = pairs[i]
        value = pairs[i + 1] if i + 1 < len(pairs) and not str(pairs[i + 1]).startswith("--") else None
        values = list(value) if isinstance(value, tuple) else [] if value is None else [value]
        if flag in out and values:
            at = out.index(flag) + 1
            out[at:at + len(values)] = values
        else:
            out += [flag] + values
        i += 2 if value is not None else 1
    return tuple(out)


#: Stopped runs that resume cases start from: (module, argv); ``{out}`` is the run's folder.
PREPARED: dict[str, tuple[str, tuple]] = {
    "synthetic_stopped": ("synthetic.run", _set(SYNTHETIC, "--trials", "2", "--stop-after", "1")),
    "mnist_small_stopped": ("importance_learning.mnist_small",
                            _set(MNIST_SMALL, "--epochs", "3", "--stop-after", "2")),
    "omniglot_stopped": ("few_shot.omniglot", _set(OMNIGLOT, "--iterations", "4", "--stop-after", "2")),
    "untargeted_stopped": ("poisoning.untargeted",
                           _set(POISON, "--epochs", "4", "--checkpoint-every", "2", "--stop-after", "2")),
}


def _files(root: Path, pattern: str) -> list[Path]:
    found = sorted(root.glob(pattern))
    if not found:
        raise FileNotFoundError(f"no {pattern} under {root}")
    return found


def truncate(pattern: str, keep: float = 0.5) -> Callable[[Path], None]:
    """A ``damage``: truncate every file matching ``pattern`` (relative to the run's folder)."""
    def damage(out: Path) -> None:
        for path in _files(out, pattern):
            _truncate(path, keep)
    damage.__name__ = f"truncate({pattern})"
    return damage


def delete(pattern: str) -> Callable[[Path], None]:
    def damage(out: Path) -> None:
        for path in _files(out, pattern):
            path.unlink()
    damage.__name__ = f"delete({pattern})"
    return damage


# ------------------------------------------------------------------------------ the cases

def _flag_cases(prefix: str, module: str, base: tuple, rows: list, area: str = "flags") -> list[Case]:
    """One `Case` per ``(id, flags, message)`` row, flags set on ``base``."""
    return [Case(f"{prefix}/{row[0]}", module, _set(base, *row[1]), row[2], area=row[3] if len(row) > 3 else area)
            for row in rows]


MS, MN, CF, SV = ("importance_learning.mnist_small", "importance_learning.mnist", "importance_learning.cifar10",
                  "importance_learning.svhn")

SCRIPT_CASES: list[Case] = [
    # --- importance learning: flags ----------------------------------------------------
    *_flag_cases("mnist_small", MS, MNIST_SMALL, [
        ("noise-above-1", ("--noise", "1.5"), "--noise must be in [0, 1]"),
        ("noise-nan", ("--noise", "nan"), "--noise must be in [0, 1]"),
        ("select-threshold-1.5", ("--select-threshold", "1.5"), "--select-threshold must be in [0, 1)"),
        ("select-threshold-negative", ("--select-threshold", "-0.1"), "--select-threshold must be in [0, 1)"),
        ("retrain-epochs-0", ("--retrain-epochs", "0"), "--retrain-epochs must be >= 1"),
        ("retrain-lr-negative", ("--retrain-lr", "-0.001"), "--retrain-lr must be > 0"),
        ("pretrain-lr-0", ("--pretrain-lr", "0"), "--pretrain-lr must be"),
        ("pretrain-epochs-negative", ("--pretrain-epochs", "-1"), "--pretrain-epochs must be >= 0"),
        ("batch-size-0", ("--batch-size", "0"), "--batch-size must be >= 1"),
        ("lr-u-negative", ("--lr-u", "-3"), "--lr-u"),
        ("lr-v-inf", ("--lr-v", "inf"), "--lr-v must be"),
        ("init-low-0", ("--init-low", "0"), "must be in (0, 1)"),
        ("init-high-above-1", ("--init-high", "1.2"), "must be in (0, 1)"),
        ("weight-decay-negative", ("--weight-decay", "-1"), "--weight-decay must be >= 0"),
        ("seed-negative", ("--seed", "-1"), "--seed must be in [0, 4294967295]"),
        ("train-size-below-batch", ("--train-size", "50"), "--train-size must be >= --batch-size"),
        ("train-size-too-large", ("--train-size", "999999"), "exceeds the 5000 training points"),
        ("test-size-0", ("--test-size", "0"), "--test-size must be >= 1"),
        ("epochs-0", ("--epochs", "0"), "expected a positive integer"),
        ("lower-steps-float", ("--lower-steps", "2.5"), "expected a positive integer"),
        ("eval-rounding-bad", ("--eval-rounding", "round"), "--eval-rounding"),
        ("lr-p-of-approxgrad", ("--lr-p", "1e-3"), "--lr-p is a setting of approxgrad"),
        ("rho0-negative", ("--rho0", "-1"), "--rho0", "config"),
        ("c-rho-below-1", ("--c-rho", "0.5"), "--c-rho", "config"),
        ("eps0-0", ("--eps0", "0"), "--eps0", "config"),
    ]),
    *_flag_cases("mnist", MN, MNIST_CNN, [
        ("halve-every-negative", ("--method", "approxgrad", "--halve-every", "-1"), "--halve-every must be >= 0"),
        ("first-epoch-negative", ("--first-epoch", "-1"), "--first-epoch must be >= 0"),
        ("linear-steps-negative", ("--method", "approxgrad", "--linear-steps", "-1"), "--linear-steps must be >= 0"),
        ("lower-optimizer-bad", ("--lower-optimizer", "rmsprop"), "invalid choice: 'rmsprop'"),
        ("approxgrad-lr-p-negative", ("--method", "approxgrad", "--lr-p", "-0.00001"), "--lr-p", "config"),
        ("approxgrad-sig-negative", ("--method", "approxgrad", "--sig", "-1"), "--sig", "config"),
    ]),
    Case("mnist/data-truncated", MN, _set(MNIST_CNN, "--data-dir", "{mnist_truncated}"), "truncated", area="data"),
    Case("cifar10/val-size-0", CF, _set(CIFAR, "--val-size", "0"), "--val-size must be"),
    Case("cifar10/val-size-too-large", CF, _set(CIFAR, "--val-size", "300"), "--val-size must be in 1..299"),
    Case("cifar10/data-truncated", CF, _set(CIFAR, "--data-dir", "{cifar_truncated}"), "truncated", area="data"),
    Case("cifar10_wrn/depth-not-6n+4", "importance_learning.cifar10_wrn",
         ("--data-dir", "{cifar}", "--out", "{out}", "--depth", "12", "--width", "1", "--val-per-class", "2",
          "--batch-size", "10", "--epochs", "1", "--pretrain-epochs", "0", "--quiet"), "6n + 4"),
    Case("svhn/data-scaled-to-0-1", SV, _set(SVHN, "--data-dir", "{svhn_scaled}"), "already scaled", area="data"),
    Case("svhn/data-labels-not-one-hot", SV, _set(SVHN, "--data-dir", "{svhn_labels}"), "one-hot", area="data"),
    Case("svhn/data-missing", SV, _set(SVHN, "--data-dir", "{empty}"), "svhn_preprocess", area="data"),
    Case("svhn/batch-above-validation", SV, _set(SVHN, "--batch-size", "80", "--train-size", "160"),
         "fewer than --batch-size 80"),
    # --- importance learning: --out, --resume, NaN ---------------------------------------
    Case("mnist_small/flag-error-keeps-previous-result", MS, _set(MNIST_SMALL, "--noise", "2"),
         "--noise must be in [0, 1]", out="previous"),
    Case("mnist_small/out-is-a-file", MS, MNIST_SMALL, "--out", out="file", area="out"),
    Case("mnist_small/out-under-a-file", MS, MNIST_SMALL, "--out", out="under_file", area="out"),
    Case("mnist_small/resume-truncated-sidecar", MS, _set(MNIST_SMALL, "--epochs", "3", "--resume"), "cannot resume",
         out="mnist_small_stopped", damage=truncate("checkpoint/run.json"), area="resume"),
    Case("mnist_small/resume-truncated-data", MS, _set(MNIST_SMALL, "--epochs", "3", "--resume"), "cannot resume",
         out="mnist_small_stopped", damage=truncate("checkpoint/*.data-*"), area="resume"),
    Case("mnist_small/resume-without-sidecar", MS, _set(MNIST_SMALL, "--epochs", "3", "--resume"), "cannot resume",
         out="mnist_small_stopped", damage=delete("checkpoint/run.json"), area="resume"),
    Case("mnist_small/resume-other-settings", MS, _set(MNIST_SMALL, "--epochs", "3", "--noise", "0.3", "--resume"),
         "other settings", out="mnist_small_stopped", area="resume"),
    Case("mnist_small/resume-fewer-epochs-than-done", MS, _set(MNIST_SMALL, "--epochs", "1", "--resume"),
         "--epochs", out="mnist_small_stopped", area="resume"),
    Case("mnist_small/nan", MS, _set(MNIST_SMALL, "--lr-v", "1e38", "--lr-u", "1e38"), "learning rate", area="nan",
         untouched=False),
    # --- few-shot -------------------------------------------------------------------------
    *_flag_cases("omniglot", "few_shot.omniglot", OMNIGLOT, [
        ("nway-1", ("--nway", "1"), "--nway must be >= 2"),
        ("kshot-0", ("--kshot", "0"), "--kshot must be >= 1"),
        ("test-lr-negative", ("--test-lr", "-0.001"), "--test-lr must be > 0"),
        ("lr-v-nan", ("--lr-v", "nan"), "--lr-v must be a finite number"),
        ("seed-negative", ("--seed", "-1"), "--seed must be in [0, 4294967295]"),
        ("iterations-0", ("--iterations", "0"), "--iterations must be >= 1"),
        ("eval-every-0", ("--eval-every", "0"), "--eval-every must be >= 1"),
        ("meta-batch-0", ("--meta-batch", "0"), "--meta-batch must be >= 1"),
        ("linear-steps-negative", ("--method", "approxgrad", "--linear-steps", "-1"), "--linear-steps must be >= 0"),
        ("train-characters-0", ("--train-characters", "0"), "--train-characters"),
        ("train-characters-too-many", ("--train-characters", "100"), "the data have 6 characters"),
        ("nway-above-classes", ("--nway", "30"), "a 30-way task needs 30 classes"),
        ("kshot-above-images", ("--kshot", "4"), "fewer than K + 3"),
        ("filters-0", ("--filters", "0"), "--filters must be >= 1"),
        ("lr-u-negative", ("--lr-u", "-0.01"), "--lr-u", "config"),
        ("rho0-negative", ("--rho0", "-1"), "--rho0", "config"),
    ]),
    Case("omniglot/data-pixels-0-255", "few_shot.omniglot", _set(OMNIGLOT, "--data-dir", "{omniglot_255}"),
         "divide by 255", area="data"),
    Case("omniglot/data-inverted", "few_shot.omniglot", _set(OMNIGLOT, "--data-dir", "{omniglot_inverted}"),
         "inverted", area="data"),
    Case("omniglot/data-negative-class-ids", "few_shot.omniglot",
         _set(OMNIGLOT, "--data-dir", "{omniglot_negative_ids}"), "class ids must be >= 0", area="data"),
    Case("omniglot/data-truncated", "few_shot.omniglot", _set(OMNIGLOT, "--data-dir", "{omniglot_truncated}"),
         "truncated", area="data"),
    Case("omniglot/data-missing", "few_shot.omniglot", _set(OMNIGLOT, "--data-dir", "{empty}"), "omniglot_build",
         area="data"),
    Case("omniglot/out-is-a-file", "few_shot.omniglot", OMNIGLOT, "--out", out="file", area="out"),
    Case("omniglot/resume-truncated-index", "few_shot.omniglot", _set(OMNIGLOT, "--iterations", "4", "--resume"),
         "cannot resume", out="omniglot_stopped", damage=truncate("checkpoint/*.index"), area="resume"),
    Case("omniglot/resume-truncated-sidecar", "few_shot.omniglot", _set(OMNIGLOT, "--iterations", "4", "--resume"),
         "cannot resume", out="omniglot_stopped", damage=truncate("checkpoint/run.json"), area="resume"),
    Case("omniglot/resume-fewer-iterations-than-done", "few_shot.omniglot",
         _set(OMNIGLOT, "--iterations", "1", "--resume"), "--iterations", out="omniglot_stopped", area="resume"),
    Case("omniglot/nan", "few_shot.omniglot", _set(OMNIGLOT, "--lr-u", "1e38", "--lr-v", "1e38"), "learning rate",
         area="nan", untouched=False),
    *_flag_cases("miniimagenet", "few_shot.miniimagenet", MINI, [
        ("filters-0", ("--filters", ("2", "0", "2", "2")), "--filters must be >= 1"),
        ("hidden-0", ("--hidden", "0"), "--hidden must be >= 1"),
        ("features-0", ("--features", "0"), "--features must be >= 1"),
        ("images-per-class-not-dividing", ("--images-per-class", "7"), "not a positive multiple of 7"),
        ("query-per-class-0", ("--query-per-class", "0"), "--query-per-class must be >= 1"),
        ("correction-bad", ("--method", "approxgrad", "--correction", "some"), "invalid choice: 'some'"),
    ]),
    Case("miniimagenet/data-truncated", "few_shot.miniimagenet",
         _set(MINI, "--data-dir", "{miniimagenet_truncated}"), "truncated", area="data"),
    Case("miniimagenet/data-float-images", "few_shot.miniimagenet",
         _set(MINI, "--data-dir", "{miniimagenet_float}"), "expected uint8", area="data"),
    # --- synthetic ------------------------------------------------------------------------
    *_flag_cases("synthetic", "synthetic.run", SYNTHETIC, [
        ("std-negative", ("--std", "-1"), "--std must be > 0"),
        ("record-every-above-epochs", ("--record-every", "10"), "--record-every 10 must be smaller than --epochs 5"),
        ("record-every-0", ("--record-every", "0"), "--record-every must be >= 1"),
        ("seed-negative", ("--seed", "-1"), "--seed must be in [0, 4294967295]"),
        ("seed-above-32-bits", ("--seed", str(2**32)), "--seed must be in [0, 4294967295]"),
        ("dim-0", ("--dim", "0"), "--dim must be >= 1"),
        ("trials-0", ("--trials", "0"), "--trials must be >= 1"),
        ("lower-steps-0", ("--lower-steps", "0"), "--lower-steps must be >= 1"),
        ("example-unknown", ("--example", "SMD99"), "unknown value(s) ['SMD99']"),
        ("lr-v-nan", ("--lr-v", "nan"), "--lr-v must be a finite number"),
        ("penalty-c-rho-0", ("--method", "penalty", "--c-rho", "0"), "--c-rho must be > 0"),
        ("approxgrad-correction-bad", ("--method", "approxgrad", "--correction", "some"), "invalid choice: 'some'"),
        ("lr-u-negative", ("--lr-u", "-0.001"), "--lr-u", "config"),
        ("penalty-c-rho-below-1", ("--method", "penalty", "--c-rho", "0.5"), "--c-rho", "config"),
        ("penalty-eps0-0", ("--method", "penalty", "--eps0", "0"), "--eps0", "config"),
    ]),
    Case("synthetic/nan", "synthetic.run", _set(SYNTHETIC, "--method", "penalty", "--rho0", "1e38"), "learning rate",
         area="nan", untouched=False),
    Case("synthetic/std-negative-cli", "synthetic.run", _set(SYNTHETIC, "--std", "-1"), "--std must be > 0",
         subprocess=True),
    Case("synthetic/out-is-a-file", "synthetic.run", SYNTHETIC, "--out", out="file", area="out"),
    Case("synthetic/resume-truncated-data", "synthetic.run", _set(SYNTHETIC, "--trials", "2", "--resume"),
         "cannot resume", out="synthetic_stopped", damage=truncate("checkpoints/*/*.data-*"), area="resume"),
    Case("synthetic/resume-truncated-sidecar", "synthetic.run", _set(SYNTHETIC, "--trials", "2", "--resume"),
         "cannot resume", out="synthetic_stopped", damage=truncate("checkpoints/*/run.json"), area="resume"),
    Case("synthetic/resume-other-settings", "synthetic.run", _set(SYNTHETIC, "--trials", "2", "--dim", "3",
                                                                   "--resume"),
         "other settings", out="synthetic_stopped", area="resume"),
    Case("synthetic/resume-fewer-trials-than-done", "synthetic.run", _set(SYNTHETIC, "--trials", "1", "--resume"),
         "trials", out="synthetic_stopped", area="resume"),
    # --- poisoning ------------------------------------------------------------------------
    *_flag_cases("untargeted", "poisoning.untargeted", POISON, [
        ("npoison-0", ("--npoison", "0"), "--npoison must be"),
        ("npoison-2000", ("--npoison", "2000"), "--npoison must be"),
        ("retrain-steps-0", ("--retrain-steps", "0"), "--retrain-steps must be >= 1"),
        ("seed-negative", ("--seed", "-1"), "--seed must be in [0, 4294967295]"),
        ("checkpoint-every-0", ("--checkpoint-every", "0"), "--checkpoint-every must be >= 1"),
        ("approxgrad-correction-bad", ("--method", "approxgrad", "--correction", "some"), "invalid choice: 'some'"),
        ("approxgrad-halve-every-negative", ("--method", "approxgrad", "--halve-every", "-1"),
         "--halve-every must be >= 0"),
        ("approxgrad-lr-p-nan", ("--method", "approxgrad", "--lr-p", "nan"), "--lr-p must be a finite number"),
        ("lr-u-negative", ("--lr-u", "-0.1"), "--lr-u", "config"),
        ("approxgrad-sig-negative", ("--method", "approxgrad", "--sig", "-1"), "--sig", "config"),
        ("rho0-negative", ("--rho0", "-10"), "--rho0", "config"),
    ]),
    Case("untargeted/nan", "poisoning.untargeted", _set(POISON, "--lr-v", "1e38", "--lr-u", "1e38"), "learning rate",
         area="nan", untouched=False),
    Case("untargeted/data-truncated", "poisoning.untargeted", _set(POISON, "--data-dir", "{mnist_truncated}"),
         "truncated", area="data"),
    Case("untargeted/out-under-a-file", "poisoning.untargeted", POISON, "--out", out="under_file", area="out"),
    Case("untargeted/resume-other-settings", "poisoning.untargeted",
         _set(POISON, "--epochs", "4", "--checkpoint-every", "2", "--npoison", "12", "--resume"), "other settings",
         out="untargeted_stopped", area="resume"),
    Case("untargeted/resume-truncated-sidecar", "poisoning.untargeted",
         _set(POISON, "--epochs", "4", "--checkpoint-every", "2", "--resume"), "cannot resume",
         out="untargeted_stopped", damage=truncate("checkpoint/run.json"), area="resume"),
    *_flag_cases("targeted", "poisoning.targeted", POISON, [
        ("npoison-odd", ("--npoison", "11"), "--npoison must be even"),
        ("first-epoch-negative", ("--method", "approxgrad", "--first-epoch", "-1"), "--first-epoch must be >= 0"),
        ("linear-steps-negative", ("--method", "approxgrad", "--linear-steps", "-2"), "--linear-steps must be >= 0"),
        ("flip-bad", ("--method", "label-flip", "--flip", "threes"), "invalid choice: 'threes'"),
        ("label-flip-npoison-above-eights", ("--method", "label-flip", "--npoison", "1000"),
         "the validation set has only"),
    ]),
    *_flag_cases("clean_label", "poisoning.clean_label", CLEAN_LABEL, [
        ("beta-negative", ("--beta", "-1"), "--beta must be >= 0"),
        ("targets-0", ("--targets", "0"), "--targets must be >= 1"),
        ("train-steps-0", ("--train-steps", "0"), "--train-steps must be >= 1"),
        ("seed-negative", ("--seed", "-1"), "--seed must be in [0, 4294967295]"),
        ("weights-missing-file", ("--weights", "{out}/none.h5"), "no such file"),
        ("lr-v-negative", ("--lr-v", "-0.001"), "--lr-v", "config"),
    ]),
    Case("clean_label/data-images-not-in-minus-1-1", "poisoning.clean_label",
         _set(CLEAN_LABEL, "--data-dir", "{dogfish_255}"), "in [-1, 1]", area="data"),
    Case("clean_label/data-features-missing", "poisoning.clean_label",
         _set(CLEAN_LABEL, "--data-dir", "{dogfish_no_features}"), "extract_features", area="data"),
    # --- data tools -----------------------------------------------------------------------
    Case("extract_features/batch-size-0", "poisoning.extract_features",
         ("--data-dir", "{dogfish}", "--out", "{out}", "--weights", "none", "--batch-size", "0", "--quiet"),
         "--batch-size must be >= 1"),
    Case("extract_features/data-missing", "poisoning.extract_features",
         ("--data-dir", "{empty}", "--out", "{out}", "--weights", "none", "--quiet"),
         "dataset_dog-fish_train-900_test-300.npz not found", area="data"),
    Case("svhn_preprocess/val-per-class-0", "importance_learning.svhn_preprocess",
         ("--data-dir", "{svhn_mats}", "--out-dir", "{out}", "--val-per-class", "0"), "--val-per-class must be >= 1"),
    Case("svhn_preprocess/seed-negative", "importance_learning.svhn_preprocess",
         ("--data-dir", "{svhn_mats}", "--out-dir", "{out}", "--val-per-class", "2", "--seed", "-1"),
         "--seed must be in [0, 4294967295]"),
    Case("svhn_preprocess/val-per-class-above-data", "importance_learning.svhn_preprocess",
         ("--data-dir", "{svhn_mats}", "--out-dir", "{out}", "--val-per-class", "50"), "fewer than the 50",
         area="data"),
    Case("svhn_preprocess/mat-truncated", "importance_learning.svhn_preprocess",
         ("--data-dir", "{svhn_mats_truncated}", "--out-dir", "{out}", "--val-per-class", "2"), "truncated",
         area="data"),
    Case("svhn_preprocess/labels-0-9", "importance_learning.svhn_preprocess",
         ("--data-dir", "{svhn_mats_labels}", "--out-dir", "{out}", "--val-per-class", "2"), "labels in 1..10",
         area="data"),
    Case("svhn_preprocess/mat-missing", "importance_learning.svhn_preprocess",
         ("--data-dir", "{empty}", "--out-dir", "{out}"), "train_32x32.mat not found", area="data"),
    Case("omniglot_build/images-missing", "few_shot.omniglot_build",
         ("--images", "{out}/nowhere", "--out", "{out}", "--quiet"), "is not a directory", area="data"),
    Case("omniglot_build/images-not-28x28", "few_shot.omniglot_build",
         ("--images", "{png_tree_32}", "--out", "{out}", "--quiet"), "expected 28x28", area="data"),
    # --- report, reproduce, evidence, benchmarks ------------------------------------------
    Case("report/runs-dir-is-a-file", "penalty_tf.paper.report", ("{a_file}",), "is not a folder", area="tools"),
    Case("report/format-bad", "penalty_tf.paper.report", ("{empty}", "--format", "xls"), "invalid choice: 'xls'",
         area="tools", subprocess=True),
    Case("reproduce/seeds-0", "penalty_tf.paper.reproduce", ("--seeds", "0", "--dry-run", "--out", "{out}", "x"),
         "--seeds must be at least 1", area="tools"),
    Case("reproduce/unknown-row", "penalty_tf.paper.reproduce", ("--dry-run", "--out", "{out}", "no-such-row"),
         "unknown row id(s): no-such-row", expect=1, area="tools"),
    Case("reproduce/budget-bad", "penalty_tf.paper.reproduce", ("--budget", "tiny", "--list"),
         "invalid choice: 'tiny'", area="tools"),
    Case("evidence/run-without-command", "penalty_tf.paper.evidence", ("run", "x"), "give the command after --",
         area="tools"),
    Case("speed/lower-steps-1", "importance_learning.speed",
         ("--lower-steps", "1", "--model", "mnist_softmax", "--batch-size", "10", "--repeats", "1", "--xla", "off",
          "--methods", "penalty", "--out", "{out}"),
         "--lower-steps must be >= 2", area="tools"),
    Case("few_shot.timing/repeats-0", "few_shot.timing",
         ("--repeats", "0", "--dataset", "omniglot", "--method", "penalty", "--xla", "off", "--meta-batch", "1",
          "--no-meta-test", "--out", "{out}"),
         "--repeats and --meta-batch must be >= 1", area="tools"),
]


# ---------------------------------------------------------------------- library cases
# Solver constructors, run()/step() inputs, callbacks. Each must raise `exception` naming the
# problem. The library's owner adds cases here (constructor validation: negative learning
# rates, rho0 < 0, c_rho < 1, eps0 <= 0, ...) as the checks land.

def _tiny_problem():
    """u (2,), v (2,), f and g quadratic."""
    import tensorflow as tf

    u, v = tf.Variable([1.0, -1.0], name="u"), tf.Variable([0.5, 0.5], name="v")

    def f(batch):
        return tf.reduce_sum(tf.square(v - 1.0)) + 0.1 * tf.reduce_sum(tf.square(u))

    def g(batch):
        return tf.reduce_sum(tf.square(v - u))

    return u, v, f, g


def _penalty(**options):
    import penalty_tf as ptf

    u, v, f, g = _tiny_problem()
    args = dict(upper_loss=f, lower_loss=g, upper_vars=[u], lower_vars=[v])
    args.update(options)
    return ptf.Penalty(args.pop("upper_loss"), args.pop("lower_loss"), **args)


def _same_variable_in_both_levels():
    u, v, f, g = _tiny_problem()
    return _penalty(upper_vars=[u, v], lower_vars=[v])


def _per_example_loss():
    import tensorflow as tf

    u, v, f, g = _tiny_problem()
    solver = _penalty(upper_vars=[u], lower_vars=[v], lower_loss=lambda batch: tf.square(v - u))
    return solver.step(None, lower_steps=1)


def _step(**kwargs):
    return _penalty().step(None, **kwargs)


def _approxgrad_step(**kwargs):
    import penalty_tf as ptf

    u, v, f, g = _tiny_problem()
    return ptf.ApproxGrad(f, g, upper_vars=[u], lower_vars=[v]).step(None, **kwargs)


def _make(*args, **kwargs):
    import penalty_tf as ptf

    u, v, f, g = _tiny_problem()
    return ptf.solvers.make(args[0], ptf.BilevelProblem(f, g, [u], [v]), *args[1:], **kwargs)


def _unbuilt_model():
    import keras

    u, v, f, g = _tiny_problem()
    return _penalty(lower_vars=keras.Sequential([keras.layers.Dense(1)]))


def _approxgrad_correction():
    import penalty_tf as ptf

    u, v, f, g = _tiny_problem()
    return ptf.ApproxGrad(f, g, upper_vars=[u], lower_vars=[v], correction="some")


def _config_unknown_field():
    import penalty_tf as ptf

    return ptf.solvers.make_config("penalty", rho=1.0)


def _config_of_other_solver():
    import penalty_tf as ptf

    return _make("penalty", ptf.solvers.ApproxGradConfig())


LIBRARY_CASES: list[LibraryCase] = [
    LibraryCase("solver/same-variable-in-both-levels", _same_variable_in_both_levels, ValueError,
                "in both upper_vars and lower_vars"),
    LibraryCase("solver/per-example-loss", _per_example_loss, ValueError, "it must return a scalar"),
    LibraryCase("solver/loss-not-callable", lambda: _penalty(upper_loss=3.0), TypeError,
                "must be a callable"),
    LibraryCase("solver/upper-vars-an-int", lambda: _penalty(upper_vars=3), TypeError, "upper_vars: expected a"),
    LibraryCase("solver/unbuilt-keras-model", _unbuilt_model, ValueError, "has no trainable variables"),
    LibraryCase("step/float-T", lambda: _step(lower_steps=2.9), TypeError, "lower_steps must be an integer"),
    LibraryCase("step/string-T", lambda: _step(lower_steps="3"), TypeError, "lower_steps must be an integer"),
    LibraryCase("step/T-0", lambda: _step(lower_steps=0), ValueError, "lower_steps must be >= 1"),
    LibraryCase("step/approxgrad-float-linear-steps", lambda: _approxgrad_step(lower_steps=2, linear_steps=1.5),
                TypeError, "linear_steps must be an integer"),
    LibraryCase("approxgrad/correction-bad", _approxgrad_correction, ValueError,
                "correction must be 'indexed' or 'all'"),
    LibraryCase("make/unknown-solver", lambda: _make("newton"), ValueError, "unknown solver 'newton'"),
    LibraryCase("make/config-of-another-solver", _config_of_other_solver, TypeError, "expected a PenaltyConfig"),
    LibraryCase("make_config/unknown-field", _config_unknown_field, TypeError, "has no field(s) ['rho']"),
]
# The loop, callbacks and solver settings (tests/bad_inputs_library.py).
sys.path.insert(0, str(Path(__file__).resolve().parent))
import bad_inputs_library  # noqa: E402

LIBRARY_CASES += bad_inputs_library._cases(LibraryCase)


# ------------------------------------------------------------------------------ running


class Context:
    """A session's scratch folder: the data sets (made on first use), the stopped runs of
    `PREPARED` and one fresh folder per case."""

    def __init__(self, root: Path, mnist_dir: Optional[Path] = None):
        self.root = Path(root)
        self.mnist_dir = mnist_dir
        self.no_data = self.root / "no_data"
        self.keras_home = self.root / "keras_home"
        for folder in (self.no_data, self.keras_home):
            folder.mkdir(parents=True, exist_ok=True)
        self._made: dict[str, Path] = {}
        self._count = 0

    def mnist_file(self) -> Path:
        path = (self.mnist_dir or Path("/nonexistent")) / "mnist.npz"
        if not path.is_file():
            raise FileNotFoundError(f"real MNIST needed: {path} does not exist (set PENALTY_TF_DATA)")
        return path.resolve()

    def data(self, name: str) -> Path:
        if name not in self._made:
            path = self.root / "data" / name
            shutil.rmtree(path, ignore_errors=True)
            DATA[name](self, path)
            self._made[name] = path
        return self._made[name]

    def prepared(self, name: str) -> Path:
        """The folder of the stopped run ``name``, run once (in this process)."""
        key = "prepared:" + name
        if key not in self._made:
            module, argv = PREPARED[name]
            out = self.root / "prepared" / name
            shutil.rmtree(out, ignore_errors=True)
            code, stderr, error = _run_in_process(module, self.format(argv, out), self.env())
            if error or code != 0:
                raise RuntimeError(f"preparing {name} failed (exit {code}): {error or stderr[-2000:]}")
            self._made[key] = out
        return self._made[key]

    def case_dir(self, case_id: str) -> Path:
        self._count += 1
        path = self.root / "cases" / f"{self._count:03d}_{case_id.replace('/', '_')}"
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        return path

    def format(self, argv: tuple, out: Path) -> list[str]:
        ctx = self

        class Lazy(dict):
            def __missing__(self, key):
                return str(ctx.data(key))

        return [arg.format_map(Lazy(out=str(out))) for arg in argv]

    def env(self) -> dict[str, str]:
        """Overrides during a case: no data but ``--data-dir``'s, an empty Keras home."""
        return {"PENALTY_TF_DATA": str(self.no_data), "KERAS_HOME": str(self.keras_home)}


@contextlib.contextmanager
def _environ(overrides: dict[str, str]):
    saved = {k: os.environ.get(k) for k in overrides}
    os.environ.update(overrides)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _exit_code(code: Any, stderr: io.StringIO) -> int:
    """SystemExit's code as the process's exit status (a string is printed, status 1)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=stderr)
    return 1


def _run_in_process(module_name: str, argv: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    """(exit status, stderr, traceback text or "") of ``python -m module_name *argv``, run here."""
    stdout, stderr = io.StringIO(), io.StringIO()
    error = ""
    with _environ(env), contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            module = importlib.import_module(module_name)
            if module_name in EXIT_ENTRY:
                code = _exit_code(module.main(argv), stderr)
            else:
                from penalty_tf.paper import experiment

                experiment.run_main(lambda: module.main(argv))
                code = 0
        except SystemExit as exit_:
            code = _exit_code(exit_.code, stderr)
        except Exception:  # the case's answer is a traceback
            code, error = 1, traceback.format_exc()
    return code, stderr.getvalue(), error


def _run_subprocess(module_name: str, argv: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    full = dict(os.environ, **env, PYTHONPATH=str(TREE), TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocesses.run([sys.executable, "-m", module_name, *argv], cwd=TREE, env=full,
                            capture_output=True, text=True, timeout=900)
    return done.returncode, done.stderr, ""


def snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` (or ``root`` itself) -> a hash of its content; folders -> "dir"."""
    out = {}
    if root.is_file():
        return {".": hashlib.sha1(root.read_bytes()).hexdigest()}
    for path in sorted(root.rglob("*")) if root.exists() else []:
        rel = str(path.relative_to(root))
        out[rel] = "dir" if path.is_dir() else hashlib.sha1(path.read_bytes()).hexdigest()
    return out


def changes(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """Files added, changed or deleted (a new empty folder is not a change)."""
    out = [f"deleted {k}" for k in before if k not in after]
    out += [f"changed {k}" for k in before if k in after and before[k] != after[k]]
    out += [f"new {k}" for k in after if k not in before and after[k] != "dir"]
    return out


def _set_up_out(case: Case, ctx: Context, folder: Path) -> Path:
    """What ``{out}`` is before the case runs (`Case.out`); returns its path."""
    out = folder / "out"
    if case.out == "file":
        out.write_text("a file, not a folder\n")
    elif case.out == "under_file":
        (folder / "file").write_text("a file, not a folder\n")
        out = folder / "file" / "out"
    elif case.out == "previous":
        out.mkdir()
        (out / "result.json").write_text('{"an earlier run": true}\n')
    elif case.out in PREPARED:
        shutil.copytree(ctx.prepared(case.out), out)
        if case.damage is not None:
            case.damage(out)
    elif case.out != "absent":
        raise ValueError(f"{case.id}: unknown out {case.out!r}")
    return out


def classify(case: Case | LibraryCase, ctx: Optional[Context] = None) -> Outcome:
    """Run one case and say what it got (module docstring)."""
    start = time.perf_counter()
    if isinstance(case, LibraryCase):
        outcome = _classify_library(case)
    else:
        outcome = _classify_script(case, ctx)
    outcome.seconds = time.perf_counter() - start
    return outcome


def _classify_library(case: LibraryCase) -> Outcome:
    try:
        case.call()
    except case.exception as error:
        if case.message in str(error):
            return Outcome(CLEAN, f"{type(error).__name__}: {error}")
        return Outcome(UNCLEAR, f"{type(error).__name__} without {case.message!r}: {error}")
    except Exception as error:
        return Outcome(TRACEBACK, f"{type(error).__name__} (expected {case.exception.__name__}): {error}")
    return Outcome(SILENT, "accepted")


def _classify_script(case: Case, ctx: Context) -> Outcome:
    folder = ctx.case_dir(case.id)
    out = _set_up_out(case, ctx, folder)
    argv = ctx.format(case.argv, out)
    before = snapshot(folder)
    run = _run_subprocess if case.subprocess else _run_in_process
    code, stderr, error = run(case.module, argv, ctx.env())
    touched = changes(before, snapshot(folder)) if case.untouched else []
    if error or "Traceback (most recent call last)" in stderr:
        text = error or stderr
        return Outcome(TRACEBACK, text.strip().splitlines()[-1][:300] if text.strip() else "traceback")
    if code == 0:
        return Outcome(SILENT, "accepted (exit 0)" + (f"; wrote {len(touched)} file(s)" if touched else ""))
    problems = []
    if code != case.expect:
        problems.append(f"exit {code}, expected {case.expect}")
    if case.message not in stderr:
        problems.append(f"message lacks {case.message!r}")
    if touched:
        problems.append("left or changed files: " + ", ".join(touched[:4]))
    last = stderr.strip().splitlines()[-1][:300] if stderr.strip() else ""
    if problems:
        return Outcome(UNCLEAR, "; ".join(problems) + f" | {last}")
    return Outcome(CLEAN, last)


# ------------------------------------------------------------------------------ census


def default_mnist_dir() -> Path:
    """``$PENALTY_TF_DATA``, else ``<this repository>/../shared/data`` (as tests/conftest.py)."""
    env = os.environ.get("PENALTY_TF_DATA")
    return Path(env).expanduser().resolve() if env else Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def census(cases: list, ctx: Context, stream=sys.stdout) -> dict[str, int]:
    """Classify ``cases``, print a table (one row per case) and the counts; return the counts."""
    import penalty_tf

    counts = {kind: 0 for kind in CLASSES}
    start = time.perf_counter()
    print(f"tree: {TREE} (penalty_tf from {Path(penalty_tf.__file__).parent})", file=stream)
    print("| case | area | class | s | detail |\n|---|---|---|---|---|", file=stream, flush=True)
    for case in cases:
        try:
            outcome = classify(case, ctx)
        except FileNotFoundError as missing:   # no real MNIST
            outcome = Outcome("skipped", str(missing))
        except Exception as error:             # the case's set-up failed (a stopped run, a damage)
            outcome = Outcome("setup failed", f"{type(error).__name__}: {error}")
        counts[outcome.kind] = counts.get(outcome.kind, 0) + 1
        detail = outcome.detail.replace("|", "/").replace("\n", " ")
        print(f"| {case.id} | {case.area} | {outcome.kind} | {outcome.seconds:.1f} | {detail} |", file=stream,
              flush=True)
    scripts = sum(isinstance(c, Case) for c in cases)
    summary = ", ".join(f"{k} {v}" for k, v in counts.items())
    print(f"\n{summary} (of {len(cases)}: {scripts} script cases, {len(cases) - scripts} library cases) "
          f"in {time.perf_counter() - start:.0f} s", file=stream)
    return counts


def all_cases() -> list:
    return list(SCRIPT_CASES) + list(LIBRARY_CASES)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--census", action="store_true", help="run the cases, print the table and the counts")
    parser.add_argument("--list", action="store_true", help="list the cases")
    parser.add_argument("--only", nargs="+", default=None, metavar="ID", help="only these cases (or id prefixes)")
    args = parser.parse_args(argv)
    cases = all_cases()
    if args.only:
        cases = [c for c in cases if any(c.id == o or c.id.startswith(o) for o in args.only)]
    if args.list or not args.census:
        for case in cases:
            print(f"{case.id}\t{case.area}")
        return 0
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with tempfile.TemporaryDirectory(prefix="bad_inputs_") as root:
        census(cases, Context(Path(root), default_mnist_dir()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
