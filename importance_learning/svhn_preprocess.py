"""SVHN preprocessing, as the original's ``pre_process_svhn_data.py`` (docs/original.md §3.4.1).

    python -m importance_learning.svhn_preprocess --data-dir D [--out-dir D] [--seed 0]

Reads ``D/train_32x32.mat`` and ``D/test_32x32.mat`` (the official "Format 2: cropped
digits" files, without the extra set), and writes ``SVHN_single_grey_without_extra.h5``
(what the experiments read) and ``SVHN_single_without_extra.h5`` (colour) into
``--out-dir`` (default: ``--data-dir``): validation = 100 random training images per class
(seeded here, unseeded in the original), greyscale 0.2989 R + 0.5870 G + 0.1140 B unscaled,
one-hot labels, datasets X_train, y_train, X_val, y_val, X_test, y_test. A missing or
malformed .mat file gives a clear error (exit status 2). ``--out-dir`` is checked before the
work; the files are written in a private staging folder there and moved onto their names
when complete (a kill never leaves half a file under a final name).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import numpy as np

from penalty_tf import files
from penalty_tf.paper import experiment
from penalty_tf.paper import settings as flags


def write_files(mat_dir: Path, out_dir: Path, rng: np.random.Generator, val_per_class: int) -> dict:
    """`preprocess_svhn` into a staging folder ``.svhn_preprocess.XXXX.tmp`` of ``out_dir``,
    then each HDF5 file moved onto its name (atomically, with the umask's mode); the staging
    folder is removed in any case. Returns the grey datasets' shapes."""
    from penalty_tf.datasets import svhn

    names = (svhn.COLOUR_FILE, svhn.GREY_FILE)
    files.remove_stale_temps(out_dir, names=[name + ".tmp" for name in names])   # older versions' temps
    staging = Path(tempfile.mkdtemp(prefix=".svhn_preprocess.", suffix=".tmp", dir=out_dir))
    try:
        shapes = svhn.preprocess_svhn(mat_dir, staging, rng, val_per_class)
        for name in names:
            files.publish_file(staging / name, out_dir / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return shapes


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True, help="directory holding train_32x32.mat and test_32x32.mat")
    parser.add_argument("--out-dir", default=None, help="where to write the HDF5 files (default: --data-dir)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the validation subsample")
    parser.add_argument("--val-per-class", type=int, default=100, help="validation images per class")
    args = parser.parse_args(argv)
    flags.check_range("val_per_class", args.val_per_class, minimum=1)
    flags.check_range("seed", args.seed, **flags.SEED_RANGE)
    out_dir = experiment.check_out_dir(Path(args.out_dir or args.data_dir), flag="--out-dir")
    shapes = write_files(Path(args.data_dir), out_dir, np.random.default_rng(args.seed), args.val_per_class)
    for key, shape in shapes.items():
        print(f"{key}: {shape}")
    print(f"wrote {out_dir / 'SVHN_single_grey_without_extra.h5'} and {out_dir / 'SVHN_single_without_extra.h5'}")
    return shapes


if __name__ == "__main__":
    experiment.run_main(main)
