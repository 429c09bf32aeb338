"""Reproduce rows of the paper's tables with one command.

    python -m penalty_tf.paper.reproduce --list [--budget full|reduced]
    python -m penalty_tf.paper.reproduce ROW_ID ... [--seeds 5] [--out DIR] [--budget full|reduced]
                                   [--dry-run] [--data-dir DIR]

Row ids are derived from the registry :data:`penalty_tf.paper.PUBLISHED`, one per
published number that this code produces:

* ``table2.<example>.t<T>.<method>`` (synthetic timings; ``--epochs 10000 --trials 10``),
* ``table3.<dataset>.noise<pct>.<method>`` (importance learning),
* ``ren.cifar10_wrn.penalty`` and ``franceschi.mnist_small.penalty`` (Section 3.2),
* ``table4.<dataset>.<N>way<K>shot.<method>`` (few-shot),
* ``table5.<untargeted|targeted>.<pct>pct.<method>`` (poisoning; pct = npoison / 10 of the
  1,000 training points),
* ``cleanlabel.dogfish.penalty``.

Literature baselines quoted by the paper (maml, ren, rmd outside Table 2, ...) are listed
by ``--list`` as not reproducible. Table 2 runs write one ``published`` dict per setting, so
the report lists them under "Other runs" (compare their seconds per 1000 iterations by hand). Each seed ``s`` runs ``python -m <script> <flags> --seed s --out
DIR/<row>/seed<s>`` in a subprocess; then the report (:mod:`penalty_tf.paper.report`) over DIR
is printed.

Reduced budgets (``--budget reduced``: a quick check, reported as "not comparable"):

* synthetic: ``--epochs 1000 --trials 2``;
* importance learning (MNIST, CIFAR10, SVHN): ``--train-size 4000 --epochs 10``;
  MNIST small scale: ``--epochs 10``; WRN: ``--train-size 2000 --epochs 2``;
* few-shot: ``--iterations 500 --test-tasks 100``;
* poisoning (a full run already takes about 4 min on 2 CPU cores): ``--epochs 1000``;
* clean-label: ``--targets 10``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from penalty_tf.paper import defaults
from penalty_tf.paper import published as paper

__all__ = ["Row", "rows", "command", "main"]

REDUCED: dict[str, tuple[str, ...]] = defaults.REDUCED
"""Extra flags of a reduced-budget run, per experiment."""

FULL_EXTRA: dict[str, tuple[str, ...]] = {"synthetic": ("--epochs", "10000", "--trials", "10")}
"""Extra flags of a full-budget run (the paper's Table 2 budget for the synthetic runner)."""

LITERATURE = ("maml", "imaml", "protonet", "relationnet", "snail", "rmd", "ren", "franceschi",
              "koh-liang", "shafahi")
"""Methods whose published numbers are literature values, not produced by this code."""


@dataclass(frozen=True)
class Row:
    """One published number with its row id and the flags that reproduce it."""

    row_id: str
    published: paper.PublishedNumber
    flags: tuple[str, ...]

    @property
    def reproducible(self) -> bool:
        """False for literature values; RMD is ours only in Table 2 (synthetic runner)."""
        if self.published.table == "Table 2":
            return True
        return self.published.method not in LITERATURE


def _pct(x: float) -> str:
    return f"{round(100 * x)}"


def _row_id_and_flags(p: paper.PublishedNumber) -> tuple[str, tuple[str, ...]]:
    """Row id and setting flags (without --method) of one published number."""
    s, name = p.setting, p.experiment.split(".")[-1]
    if p.table == "Table 2":
        return (f"table2.{s['example'].lower()}.t{s['lower_steps']}.{p.method}",
                ("--example", s["example"], "--lower-steps", str(s["lower_steps"])))
    if p.experiment == "importance_learning.cifar10_wrn":
        return f"ren.{name}.{p.method}", ("--noise", str(s["noise"]))
    if p.experiment == "importance_learning.mnist_small":
        return f"franceschi.{name}.{p.method}", ("--noise", str(s["noise"]))
    if p.table == "Table 3":
        return f"table3.{name}.noise{_pct(s['noise'])}.{p.method}", ("--noise", str(s["noise"]))
    if p.table == "Table 4":
        return (f"table4.{name}.{s['nway']}way{s['kshot']}shot.{p.method}",
                ("--nway", str(s["nway"]), "--kshot", str(s["kshot"])))
    if p.table == "Table 5":
        return (f"table5.{name}.{s['npoison'] // 10}pct.{p.method}",
                ("--npoison", str(s["npoison"])))
    return f"cleanlabel.dogfish.{p.method}", ()


def rows() -> list[Row]:
    """Every published number as a :class:`Row`, in the order of the paper."""
    out = []
    for p in paper.PUBLISHED:
        row_id, flags = _row_id_and_flags(p)
        out.append(Row(row_id, p, flags))
    return out


def command(row: Row, budget: str = "full", seed: Optional[int] = None,
            out: Optional[Path] = None, data_dir: Optional[str] = None) -> list[str]:
    """The ``python -m ...`` command line of one row (and seed / output folder)."""
    exp = row.published.experiment
    script = "synthetic.run" if exp == "synthetic" else exp
    cmd = [sys.executable, "-m", script, *row.flags, "--method", row.published.method]
    cmd += list(REDUCED.get(exp, ()) if budget == "reduced" else FULL_EXTRA.get(exp, ()))
    if seed is not None:
        cmd += ["--seed", str(seed)]
    if out is not None:
        cmd += ["--out", str(out)]
    if data_dir is not None:
        cmd += ["--data-dir", data_dir]
    return cmd + ["--quiet"]


def _display(cmd: list[str]) -> str:
    return " ".join(["python", *cmd[1:]])


def list_rows(budget: str) -> str:
    """The text of ``--list``: every row id and its command (or why not)."""
    lines = []
    for row in rows():
        if row.reproducible:
            lines.append(f"{row.row_id}\t{_display(command(row, budget))}")
        else:
            lines.append(f"{row.row_id}\t(not reproducible: literature value)")
    return "\n".join(lines)


def _select(ids: list[str]) -> list[Row]:
    """Rows for the requested ids; raises SystemExit naming unknown or literature ids."""
    by_id = {r.row_id: r for r in rows()}
    unknown = [i for i in ids if i not in by_id]
    if unknown:
        raise SystemExit(f"unknown row id(s): {', '.join(unknown)} (see --list)")
    literature = [i for i in ids if not by_id[i].reproducible]
    if literature:
        raise SystemExit(f"not reproducible (literature values): {', '.join(literature)}")
    return [by_id[i] for i in ids]


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m penalty_tf.paper.reproduce",
                                     description="Run the commands of paper table rows, then report.")
    parser.add_argument("rows", nargs="*", metavar="ROW_ID")
    parser.add_argument("--list", action="store_true", help="print every row id and its command")
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 per row")
    parser.add_argument("--out", type=Path, default=Path("runs/reproduce"))
    parser.add_argument("--budget", choices=["full", "reduced"], default="full")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--dry-run", action="store_true", help="print the commands only")
    args = parser.parse_args(argv)
    if args.list:
        print(list_rows(args.budget))
        return 0
    if not args.rows:
        parser.error("give ROW_ID(s) or --list")
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")
    failed = 0
    for row in _select(args.rows):
        for seed in range(args.seeds):
            cmd = command(row, args.budget, seed, args.out / row.row_id / f"seed{seed}", args.data_dir)
            print(_display(cmd), flush=True)
            if not args.dry_run:
                failed += subprocess.run(cmd).returncode != 0
    if args.dry_run:
        return 0
    from penalty_tf.paper import report
    report.main([str(args.out)])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
