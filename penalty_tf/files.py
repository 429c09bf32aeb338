"""Files written so that a kill never leaves half of one: atomic writes, strict JSON.

Used by the checkpoints (`penalty_tf.checkpoints`), the experiment scripts and the tools.
Every file appears under its final name only when complete, with the mode an ordinary
``open()`` would give it (0o666 minus the umask). A killed write leaves a temporary file
``.NAME.XXXXXXXX.tmp`` behind; `remove_stale_temps` removes those that no live writer holds
(the writer keeps an exclusive ``flock`` on its temporary file until the rename).
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import math
import os
import re
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Union

import numpy as np

try:
    import fcntl
except ImportError:            # not POSIX: stale temporary files are judged by age alone
    fcntl = None

PathLike = Union[str, os.PathLike]

#: Names of temporary files and directories: `atomic_file`'s ``.NAME.XXXXXXXX.tmp`` (and
#: the fixed ``.NAME.tmp`` older writers used), and TensorFlow's ``ckpt-N_temp`` directory
#: of a checkpoint write in progress.
TEMP_NAME = re.compile(r"^\..+\.tmp$")
TF_TEMP_NAME = re.compile(r"^ckpt-\d+_temp$")
#: A temporary that no lock protects counts as stale when untouched for this many seconds;
#: one whose lock nobody holds, after `UNLOCKED_AFTER_S` (the instant between a writer's
#: ``mkstemp`` and its ``flock``).
STALE_AFTER_S = 60.0
UNLOCKED_AFTER_S = 2.0
_UMASK_LOCK = threading.Lock()


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


def current_umask() -> int:
    """The process's umask. Read from ``/proc/self/status`` where it is there (Linux), so
    that nothing changes; elsewhere set to 0o077 and back at once, under a lock (a file
    another thread creates in between gets fewer permissions, never more)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o077)
        os.umask(mask)
    return mask


def default_mode() -> int:
    """The mode ``open(path, "w")`` gives a new file: 0o666 minus the umask."""
    return 0o666 & ~current_umask()


def _try_lock(handle: Any) -> bool | None:
    """Take an exclusive ``flock`` on an open file without waiting: True when taken, False
    when another process holds it, None when locks are not available here."""
    if fcntl is None:
        return None
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:
        return None
    return True


@contextlib.contextmanager
def atomic_file(path: PathLike) -> Iterator[io.BufferedWriter]:
    """Yield a binary file that replaces ``path`` only if the block succeeds.

    The data goes to a temporary file ``.NAME.XXXXXXXX.tmp`` in the same directory (so the
    final rename is atomic on POSIX), locked (``flock``) while it is written, flushed,
    fsynced, given the mode of an ordinary new file (0o666 minus the umask; `mkstemp`
    makes 0o600), then renamed onto ``path`` with :func:`os.replace` before the lock is
    released. On any exception the temporary file is removed and an existing ``path`` is
    left untouched. The parent directory is created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            _try_lock(handle)
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
            os.chmod(tmp_name, default_mode())
            os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


def write_text_atomic(path: PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path``, atomically (`atomic_file`). Returns the path written."""
    path = Path(path)
    with atomic_file(path) as handle:
        handle.write(text.encode(encoding))
    return path


def save_npy_atomic(path: PathLike, array: Any) -> Path:
    """``np.save`` of ``array`` to ``path`` (the name used as given), atomically."""
    path = Path(path)
    with atomic_file(path) as handle:
        np.save(handle, np.asarray(array))
    return path


def publish_file(source: PathLike, path: PathLike) -> Path:
    """Move a finished file (e.g. one a library wrote into a private staging directory) onto
    ``path`` atomically, with the mode of an ordinary new file. Same filesystem only."""
    os.chmod(source, default_mode())
    os.replace(source, path)
    return Path(path)


# --------------------------------------------------------------- writable directories


def check_writable_file(path: PathLike) -> Path:
    """Prove, before any work, that ``path`` can later be written by `atomic_file`: it is not
    a directory, and its directory can be created and written (`check_writable_dir`).
    Raises `OSError` otherwise."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "is a directory, not a file", str(path))
    check_writable_dir(path.absolute().parent)
    return path


def writable_file_argument(text: str) -> str:
    """An ``argparse`` ``type=`` for an output file flag: `check_writable_file` when the
    flags are parsed (before any work); a failure is argparse's usage error naming the flag."""
    import argparse

    try:
        check_writable_file(text)
    except OSError as error:
        raise argparse.ArgumentTypeError(f"{text}: {error}") from None
    return text


def check_writable_dir(directory: PathLike) -> Path:
    """Create ``directory`` (and its parents) and prove that a file can be written there: a
    probe file is created, written, fsynced and removed. Raises the `OSError` of the first
    step that fails (a file in the way, no permission, a read-only or full disk), after
    removing the directories this call created, so that a failure leaves nothing behind."""
    directory = Path(directory)
    created = [p for p in (directory, *directory.parents) if not os.path.lexists(p)]
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-probe.", suffix=".tmp", dir=directory)
        try:
            os.write(fd, b"probe")
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError:
        for folder in created:             # deepest first
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    return directory


def _newest_mtime(path: Path) -> float:
    """The latest modification time of ``path`` and, for a directory, of everything in it."""
    newest = path.lstat().st_mtime
    if path.is_dir() and not path.is_symlink():
        for root, dirs, names in os.walk(path):
            for name in dirs + names:
                with contextlib.suppress(OSError):
                    newest = max(newest, os.lstat(os.path.join(root, name)).st_mtime)
    return newest


def _remove_if_stale(path: Path, now: float) -> bool:
    """Remove a temporary file or directory unless a live writer may still use it: a file
    whose ``flock`` someone holds is kept; one nobody holds is removed (once older than
    `UNLOCKED_AFTER_S`); without locks (a directory, or no ``flock`` here) it must be
    untouched for `STALE_AFTER_S`."""
    if path.is_file() and not path.is_symlink():
        with open(path, "rb") as handle:
            locked = _try_lock(handle)
            age = now - _newest_mtime(path)
            if locked is False or age <= (UNLOCKED_AFTER_S if locked else STALE_AFTER_S):
                return False
            path.unlink()
            return True
    if now - _newest_mtime(path) <= STALE_AFTER_S:
        return False
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()
    return True


def remove_stale_temps(directory: PathLike, names: Iterable[str] = ()) -> list[Path]:
    """Remove the temporary files of killed writes directly in ``directory`` (not below it):
    names matching `TEMP_NAME` (``.NAME.XXXXXXXX.tmp``) or `TF_TEMP_NAME` (``ckpt-N_temp``),
    or given in ``names`` (a writer's own fixed temporary names), and only those no live
    writer holds (`_remove_if_stale`). Returns the paths removed; a
    missing directory, or a temporary that vanishes meanwhile or cannot be removed (not
    ours to remove), is no error."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    removed, now = [], time.time()
    for entry in sorted(directory.iterdir()):
        if not (TEMP_NAME.match(entry.name) or TF_TEMP_NAME.match(entry.name) or entry.name in names):
            continue
        with contextlib.suppress(OSError):
            if _remove_if_stale(entry, now):
                removed.append(entry)
    return removed


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
