"""One way to make a run resumable: a `tf.train.Checkpoint` plus a small JSON sidecar.

    ckpt = ptf.RunCheckpoint("runs/x", config=settings, rngs={"data": rng},
                             solver=solver, model=model)
    state = ckpt.restore()             # None on a fresh start, else what `save` was given
    start = 0 if state is None else state["epoch"]
    for epoch in range(start, epochs):
        ...
        ckpt.save(epoch=epoch + 1, history=history)

The TensorFlow checkpoint holds every trackable given (a solver saves u, v, its optimizers'
moments, schedule variables and counters; a Keras model its weights; plain `tf.Variable`s
themselves). The sidecar ``run.json`` holds what TensorFlow does not: the NumPy random
generators' states, the run's own JSON state (history, data position, epoch), and the
resume key derived from the run's config. Writing order makes a kill at any moment safe:
the TF files of checkpoint n are written first, then the sidecar naming them replaces the
old one atomically, then checkpoints older than n - 1 are deleted; a restore reads the
sidecar and the checkpoint it names. n is one more than the highest number of the TF files
in the directory, so a save never overwrites files (not even those of a damaged
checkpoint, or of one whose sidecar a kill prevented).

A restore that fails (an unreadable, truncated or foreign checkpoint) is a `CheckpointError`
that names the file and deletes nothing; a save that cannot write is an `OSError`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

import numpy as np
import tensorflow as tf

from penalty_tf.files import PathLike, to_jsonable, write_json_atomic

SIDECAR = "run.json"
FORMAT = 1


class CheckpointError(ValueError):
    """A checkpoint cannot be resumed: unreadable, truncated, or written with other settings."""


def resume_key(config: Any, ignore: Iterable[str] = ()) -> dict[str, Any]:
    """What a resumed run must agree on, as JSON: the fields of ``config`` (a dataclass, a
    mapping or an `argparse.Namespace`; nested dataclasses expanded) minus ``ignore`` and
    minus dataclass fields declared ``field(metadata={"resume": False})``."""
    skip = set(ignore)
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        skip |= {f.name for f in dataclasses.fields(config) if f.metadata.get("resume") is False}
        items = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    elif isinstance(config, argparse.Namespace):
        items = vars(config)
    elif isinstance(config, Mapping):
        items = dict(config)
    else:
        raise TypeError(f"config must be a dataclass, a mapping or a Namespace, got {type(config).__name__}")
    out = {}
    for key, value in items.items():
        if key in skip:
            continue
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            value = {"type": type(value).__name__, **resume_key(value)}
        out[key] = value
    return to_jsonable(out)


def _differences(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    keys = sorted(set(saved) | set(current))
    return [f"{k}: checkpoint {saved.get(k, '(absent)')!r}, now {current.get(k, '(absent)')!r}"
            for k in keys if saved.get(k, "(absent)") != current.get(k, "(absent)")]


class RunCheckpoint:
    """A run's resumable state in ``directory``: TF checkpoint files ``ckpt-<n>.*`` and the
    sidecar ``run.json``.

    Args:
      directory: where the files go (created on the first `save`).
      config: the run's settings; `resume_key` of it must equal the saved one for a
        restore (a dataclass, a mapping or an `argparse.Namespace`).
      ignore: names in ``config`` that may differ on resume (e.g. ``("epochs", "quiet")``).
      rngs: NumPy generators whose states are saved and restored.
      **trackables: what the TF checkpoint holds (``solver=``, ``model=``, variables...).
    """

    def __init__(self, directory: PathLike, config: Any, *, ignore: Iterable[str] = (),
                 rngs: Optional[Mapping[str, np.random.Generator]] = None, **trackables: Any):
        if not trackables:
            raise ValueError("RunCheckpoint needs at least one trackable (solver=..., model=...)")
        self.directory = Path(directory)
        self.key = resume_key(config, ignore)
        self.rngs = dict(rngs or {})
        self.checkpoint = tf.train.Checkpoint(**trackables)

    @property
    def sidecar(self) -> Path:
        return self.directory / SIDECAR

    def exists(self) -> bool:
        """Whether a checkpoint has been saved in the directory."""
        return self.sidecar.is_file()

    def numbers(self) -> list[int]:
        """The numbers n of the TF checkpoint files ``ckpt-<n>.*`` in the directory, sorted."""
        found = set()
        for path in self.directory.glob("ckpt-*"):
            number = path.name[len("ckpt-"):].split(".")[0]
            if number.isdigit() and path.is_file():
                found.add(int(number))
        return sorted(found)

    def save(self, **state: Any) -> Path:
        """Save the trackables, the generators and ``state`` (JSON-able keyword values, e.g.
        ``epoch=3, history=[...]``); returns the sidecar's path. A TF write that fails (a
        full disk, no permission) is an `OSError` naming the checkpoint."""
        number = max(self.numbers(), default=0) + 1
        self.directory.mkdir(parents=True, exist_ok=True)
        try:
            prefix = self.checkpoint.write(str(self.directory / f"ckpt-{number}"))
        except tf.errors.OpError as error:
            raise OSError(f"cannot write the checkpoint {self.directory / f'ckpt-{number}'}: "
                          f"{error.message}") from error
        sidecar = {"format": FORMAT, "number": number, "checkpoint": Path(prefix).name,
                   "config": self.key,
                   "rngs": {name: rng.bit_generator.state for name, rng in self.rngs.items()},
                   "state": state}
        write_json_atomic(self.sidecar, sidecar)
        self._delete_older_than(number - 1)
        return self.sidecar

    def restore(self) -> Optional[dict[str, Any]]:
        """Restore the latest save; returns its ``state`` (None when there is none).

        Raises `CheckpointError` (naming the file and, for other settings, every differing
        entry) when the checkpoint is unreadable or was written with another config.
        """
        if not self.exists():
            return None
        sidecar = self._read_sidecar()
        differences = _differences(sidecar["config"], self.key)
        if differences:
            raise CheckpointError(
                f"cannot resume from {self.directory}: it was written with other settings "
                f"({'; '.join(differences[:6])}); use the same settings or another directory")
        prefix = self.directory / str(sidecar["checkpoint"])
        try:
            status = self.checkpoint.read(str(prefix))
            status.assert_existing_objects_matched()
        except (tf.errors.OpError, ValueError, AssertionError, IndexError, OSError) as error:
            raise CheckpointError(
                f"cannot resume from {self.directory}: its checkpoint {prefix.name} is unreadable or does "
                f"not match this model/solver (files {prefix}.index and {prefix}.data-*; "
                f"{type(error).__name__}: {' '.join(str(error).split())[:300]}); {self._fix()}") from error
        for name, rng in self.rngs.items():
            try:
                rng.bit_generator.state = sidecar["rngs"][name]
            except (KeyError, TypeError, ValueError) as error:
                raise CheckpointError(f"cannot resume from {self.directory}: {self.sidecar} holds no valid "
                                      f"state of generator {name!r} ({error!r}); {self._fix()}") from error
        return sidecar["state"]

    def _fix(self) -> str:
        """The fix of a damaged checkpoint, for error messages."""
        return f"delete {self.directory} to start afresh (or choose another directory)"

    def _read_sidecar(self) -> dict[str, Any]:
        try:
            sidecar = json.loads(self.sidecar.read_text())
            if sidecar.get("format") != FORMAT:
                raise ValueError(f"format {sidecar.get('format')!r}, expected {FORMAT}")
            for key in ("number", "checkpoint", "config", "rngs", "state"):
                sidecar[key]
            if not all(isinstance(sidecar[key], dict) for key in ("config", "rngs")):
                raise ValueError("its config and rngs are not JSON objects")
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            raise CheckpointError(f"cannot resume from {self.directory}: {self.sidecar} is unreadable or "
                                  f"truncated ({type(error).__name__}: {error}); {self._fix()}") from error
        return sidecar

    def _delete_older_than(self, keep_from: int) -> None:
        for path in self.directory.glob("ckpt-*"):
            number = path.name[len("ckpt-"):].split(".")[0]
            if number.isdigit() and int(number) < keep_from and path.is_file():
                path.unlink(missing_ok=True)
