"""Files written so that a kill never leaves half of one: atomic writes, strict JSON.

Used by the checkpoints (`penalty_tf.checkpoints`) and by the experiment scripts.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator, Mapping, Union

import numpy as np

PathLike = Union[str, os.PathLike]


def to_jsonable(obj: Any) -> Any:
    """Convert ``obj`` to something strict JSON can hold.

    * NumPy scalars become Python ``int``/``float``/``bool``; arrays become lists;
      TensorFlow tensors and other objects with ``.numpy()`` are converted the same way.
    * NaN and +-infinity become ``None`` (JSON has no such numbers).
    * Mappings become dicts with string keys; tuples, lists and sets become lists.
    * ``pathlib.Path`` becomes ``str``.

    Raises:
        TypeError: for an object that has no sensible JSON form.
    """
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, (int, np.integer)) and not isinstance(obj, np.bool_):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, (float, np.floating)):
        value = float(obj)
        return value if math.isfinite(value) else None
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, Mapping):
        return {str(key): to_jsonable(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(value) for value in obj]
    if isinstance(obj, (set, frozenset)):
        return [to_jsonable(value) for value in sorted(obj, key=repr)]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if hasattr(obj, "numpy"):  # tf.Tensor, tf.Variable
        return to_jsonable(np.asarray(obj.numpy()))
    raise TypeError(f"cannot convert object of type {type(obj).__name__} to JSON: {obj!r}")


# --------------------------------------------------------------- atomic file writes


@contextlib.contextmanager
def atomic_file(path: PathLike) -> Iterator[io.BufferedWriter]:
    """Yield a binary file that replaces ``path`` only if the block succeeds.

    The data goes to a temporary file in the same directory (so the final rename is
    atomic on POSIX and Windows), which is flushed and fsynced, then renamed onto
    ``path`` with :func:`os.replace`. On any exception the temporary file is removed
    and an existing ``path`` is left untouched. The parent directory is created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


def write_json_atomic(path: PathLike, obj: Any) -> Path:
    """Write ``obj`` as strict, indented JSON to ``path``, atomically.

    ``obj`` is first passed through :func:`to_jsonable`; it is fully serialised before
    anything is written, and the file appears under its final name only when complete.
    Returns the path written.
    """
    path = Path(path)
    text = json.dumps(to_jsonable(obj), indent=2, sort_keys=False, allow_nan=False)
    with atomic_file(path) as handle:
        handle.write((text + "\n").encode("utf-8"))
    return path


def save_npz_atomic(path: PathLike, **arrays: Any) -> Path:
    """Save named arrays to an uncompressed ``.npz`` file at ``path``, atomically.

    ``path`` is used as given (NumPy would append ``.npz`` to a name without it when
    given a file name; here the name is never changed). Returns the path written.
    """
    path = Path(path)
    with atomic_file(path) as handle:
        np.savez(handle, **{name: np.asarray(value) for name, value in arrays.items()})
    return path
