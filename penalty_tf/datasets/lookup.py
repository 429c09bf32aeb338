"""Where a dataset file is looked for, and the error when it is not found."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Optional, Sequence

ENV_VAR = "PENALTY_TF_DATA"


class DataError(Exception):
    """A dataset file is missing, truncated or malformed.

    The experiment scripts report it like a bad flag: ``error: <message>`` and exit status 2
    (`penalty_tf.paper.experiment.run_main`)."""


def search_dirs(data_dir: Optional[os.PathLike | str] = None) -> list[Path]:
    """The directories searched, in order: ``data_dir``, ``$PENALTY_TF_DATA``, Keras' cache."""
    dirs = []
    if data_dir:
        dirs.append(Path(data_dir).expanduser())
    if os.environ.get(ENV_VAR):
        dirs.append(Path(os.environ[ENV_VAR]).expanduser())
    dirs.append(Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")).expanduser() / "datasets")
    return dirs


def find_file(filename: str, data_dir: Optional[os.PathLike | str] = None, *,
              subdirs: Sequence[str] = ("",), download: Optional[Callable[[], Path]] = None,
              how_to_get: str = "") -> Path:
    """Return the path of ``filename``, searched in `search_dirs` (and their ``subdirs``).

    If it is nowhere and ``download`` is given, call it (it returns the downloaded path).
    Otherwise, or if the download fails, raise `DataError` naming the file, every place
    looked at, and ``how_to_get``.
    """
    tried = []
    for base in search_dirs(data_dir):
        for sub in subdirs:
            path = base / sub / filename
            tried.append(path)
            if path.is_file():
                return path
    problem = ""
    if download is not None:
        try:
            return Path(download())
        except Exception as error:  # no network, HTTP error, ...: report it with the rest
            problem = f" The download failed: {type(error).__name__}: {error}."
    where = "\n  ".join(str(p) for p in tried)
    raise DataError(f"{filename} not found. Looked in:\n  {where}\n{problem} {how_to_get}".rstrip()
                    + f"\nPass --data-dir DIR or set {ENV_VAR}=DIR to the directory holding it.")


def read_npz(path: Path, keys: Sequence[str], what: str, on_missing: str, on_corrupt: str) -> dict:
    """The arrays ``keys`` of the .npz file ``path`` (pickles refused).

    `DataError` if a key is missing (the message names them, says the file is not ``what``
    and adds ``on_missing``) or the file is truncated or not an .npz (then ``on_corrupt``).
    """
    import zipfile

    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in keys if k not in data.files]
            if missing:
                raise DataError(f"{path} is not {what}: keys {missing} are missing "
                                f"(found {sorted(data.files)}){on_missing}")
            return {k: data[k] for k in keys}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as error:
        raise DataError(f"{path} is truncated or not an .npz file ({error}); {on_corrupt}") from error
