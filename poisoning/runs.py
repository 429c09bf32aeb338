"""Run plumbing shared by the three attacks: the flags that say how a run is carried out
(not what it computes), its one checkpoint, and the solver's outputs as a record.

A run checkpoints through `penalty_tf.checkpoints.RunCheckpoint` in ``<out>/checkpoint``:
the TensorFlow checkpoint holds the solver (u, v, optimizer moments, schedule variables,
counters) and the attack's variables; the JSON sidecar the classifier generator's state
and the run's progress. What a resume must match is every flag except `RUN_ONLY`. The
directory is removed once result.json is written.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np

from penalty_tf.checkpoints import RunCheckpoint
from penalty_tf.paper import experiment

#: Flags that may differ between a checkpoint and its resumption.
RUN_ONLY = ("quiet", "resume", "out", "data_dir", "checkpoint_every", "stop_after", "deterministic")
RESUME_HELP = ("continue from the checkpoint in --out; every flag must be as before but --quiet, --out, "
               "--data-dir, --checkpoint-every and --deterministic: another --epochs is refused, naming both "
               "values")


def add_run_flags(parser: argparse.ArgumentParser, *, checkpoint_every: int) -> None:
    """``--checkpoint-every N`` and the hidden ``--stop-after K`` (tests: a killed run)."""
    parser.add_argument("--checkpoint-every", type=int, default=checkpoint_every,
                        help="save a checkpoint every this many bilevel updates, for --resume "
                             "(default: %(default)s)")
    parser.add_argument("--stop-after", type=int, default=None, help=argparse.SUPPRESS)


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """How a run is carried out; ``config`` (all flags) gives the checkpoint's resume key.

    ``stop_after``: stop, as if killed, after this many bilevel updates of this process.
    """

    config: argparse.Namespace
    checkpoint_dir: Path
    quiet: bool
    resume: bool
    checkpoint_every: int
    stop_after: Optional[int]

    @classmethod
    def from_args(cls, args: argparse.Namespace, out: Path) -> "RunOptions":
        if args.checkpoint_every < 1:
            raise experiment.ExperimentError(f"--checkpoint-every must be >= 1, got {args.checkpoint_every}")
        return cls(args, out / "checkpoint", args.quiet, args.resume, args.checkpoint_every,
                   args.stop_after)

    def update_limit(self, done: int, total: int, already: int = 0) -> int:
        """The update count to stop at: ``total``, or fewer when the ``stop_after`` updates
        of this process (``already`` of them spent) end sooner."""
        return total if self.stop_after is None else min(total, done + self.stop_after - already)


def open_checkpoint(options: RunOptions, rngs: Mapping[str, np.random.Generator],
                    **trackables: Any) -> tuple[RunCheckpoint, Optional[dict[str, Any]]]:
    """The run's checkpoint and, under ``--resume``, the state it restored (None: start
    afresh). A checkpoint of other settings is an `ExperimentError` naming them."""
    checkpoint = RunCheckpoint(options.checkpoint_dir, options.config, ignore=RUN_ONLY,
                               rngs=rngs, **trackables)
    state = experiment.restore_checkpoint(checkpoint) if options.resume else None
    return checkpoint, state


def remove_checkpoint(options: RunOptions) -> None:
    """Delete the checkpoint directory (after result.json is written: the run is complete)."""
    shutil.rmtree(options.checkpoint_dir, ignore_errors=True)
