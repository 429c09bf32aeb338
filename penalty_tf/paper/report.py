"""Side-by-side report of our runs against the paper's published numbers.

    python -m penalty_tf.paper.report RUNS_DIR [--format markdown|csv] [--out FILE] [--plot-dir DIR]

Reads every ``result.json`` under RUNS_DIR (recursively), groups the runs of the same
(experiment, method, setting, budget) across seeds into mean ± sd (sample sd, ddof = 1) and n,
and prints one table per paper table with the published number, the difference in
units of the published spread, and a verdict. A PNG per table (ours vs published, error
bars) is written to ``--plot-dir`` (default: the folder of ``--out``; no plots when
neither is given).

Which metric is compared (the one the published mean measures):

* ``importance_learning.*``: ``metrics.test_accuracy``
* ``poisoning.untargeted``: ``metrics.poisoned_test_accuracy``
* ``poisoning.targeted``: ``metrics.attack_success_rate``
* ``poisoning.clean_label``: ``metrics.success_rate``
* ``few_shot.*``: ``metrics.final.acc_mean``

Budget rule ("full" or "reduced"): a run is *full* when every budget flag in its config
is at least the original's value for that script and method, and no subset flag
(``train_size``, ``test_size``) is set; otherwise *reduced*. The original's values are in
:data:`FULL_BUDGET` (importance: ``epochs``, ``lower_steps`` and ``pretrain_epochs`` as in
each script's method defaults, mnist_small also ``retrain_epochs`` 500; baselines
(oracle, val-only, train-val, label-flip) only their training schedule (``pretrain_epochs``,
``retrain_steps``); poisoning: ``epochs`` 5000 (targeted Penalty 5001), ``lower_steps`` 20
and ``retrain_steps`` 10001; few-shot: ``lower_steps`` 20,
``iterations`` 5000 for Omniglot 5-way, 10000 for 20-way, 20001 for Mini-ImageNet
(ApproxGrad 5-shot 10001), and ``test_tasks`` 600). A flag missing from the config or
set to ``None`` counts as the script's default, i.e. full. The budget column says
``full`` or names the reduced flags (``reduced (epochs=10, train_size=4000)``); runs at
different budgets are separate rows.

Verdict (from the point of view of the method; ``higher_is_better`` of the published row):

* ``not comparable (reduced)`` when the group's budget is reduced;
* ``within 2 sd`` when ``|ours - published| <= 2 x published spread``;
* otherwise ``better`` or ``worse`` by the sign of the difference;
* rows without a published spread get ``better``/``worse``/``equal`` with "(no sd)".

For Mini-ImageNet the published spread is a 95 % CI half-width, used as given (the
column header says "spread").

Runs whose ``published`` is ``{}`` or not a single row (speed runs, the synthetic
runner's per-setting dict) are listed under "Other runs". A malformed result.json is
skipped with a warning naming the file.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from penalty_tf.files import atomic_file, write_text_atomic
from penalty_tf.paper import defaults

__all__ = ["Run", "Group", "load_runs", "metric_value", "budget", "aggregate",
           "budget_text", "difference", "verdict", "render_markdown", "render_csv", "main"]

#: Budget flags and the original's value, per (experiment, method); "*" = any method (the
#: one table in `penalty_tf.paper.defaults`).
FULL_BUDGET: dict[tuple[str, str], dict[str, int]] = defaults.FULL_BUDGET

SUBSET_FLAGS = ("train_size", "test_size")
BASELINES_WITHOUT_EPOCHS = ("label-flip",)

_METRIC = {
    "poisoning.untargeted": "poisoned_test_accuracy",
    "poisoning.targeted": "attack_success_rate",
    "poisoning.clean_label": "success_rate",
}


@dataclass
class Run:
    """One result.json: where it is, what it ran and the compared value."""

    path: Path
    experiment: str
    method: str
    config: dict
    published: dict
    value: Optional[float]
    wall_time_s: Optional[float]


@dataclass
class Group:
    """Runs of one (experiment, method, setting) with their aggregate."""

    published: dict
    runs: list = field(default_factory=list)

    @property
    def values(self) -> list[float]:
        return [r.value for r in self.runs if r.value is not None]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> Optional[float]:
        return sum(self.values) / self.n if self.n else None

    @property
    def sd(self) -> Optional[float]:
        """Sample standard deviation (ddof = 1); None for fewer than two runs."""
        if self.n < 2:
            return None
        m = self.mean
        return math.sqrt(sum((v - m) ** 2 for v in self.values) / (self.n - 1))

    @property
    def budget(self) -> str:
        """``"full"`` or ``"reduced"``; the runs of a group share one budget (`aggregate`)."""
        return "full" if all(budget(r) == "full" for r in self.runs) else "reduced"


def metric_value(experiment: str, metrics: dict) -> Optional[float]:
    """Return the metric of ``metrics`` that the published number measures, or None."""
    if experiment.startswith("few_shot."):
        final = metrics.get("final") or {}
        value = final.get("acc_mean") if isinstance(final, dict) else None
    elif experiment.startswith("importance_learning."):
        value = metrics.get("test_accuracy")
    else:
        value = metrics.get(_METRIC.get(experiment, ""))
    return float(value) if isinstance(value, (int, float)) else None


def _few_shot_iterations(experiment: str, method: str, config: dict) -> int:
    """The original's number of meta-iterations for a few-shot setting."""
    if experiment == "few_shot.omniglot":
        return 5000 if config.get("nway") == 5 else 10000
    if method == "approxgrad" and config.get("kshot") == 5:
        return 10001
    return 20001


def full_budget(experiment: str, method: str, config: dict) -> dict[str, int]:
    """Budget flags and their full values for a run (see the module docstring)."""
    rule = {}
    for key in ((experiment, method), (experiment, "*"), (experiment, "penalty")):
        if key in FULL_BUDGET:
            rule = dict(FULL_BUDGET[key])
            break
    if experiment.startswith("few_shot."):
        rule["iterations"] = _few_shot_iterations(experiment, method, config)
    if method in BASELINES_WITHOUT_EPOCHS or (
            experiment.startswith("importance_learning.") and method not in ("penalty", "approxgrad")):
        # baselines have no bilevel phase: only their training schedule counts
        rule = {k: v for k, v in rule.items() if k in ("retrain_steps", "pretrain_epochs")}
    return rule


def reduced_flags(run: Run) -> dict[str, Any]:
    """The flags that make a run reduced: subset flags that are set, budget flags below
    the original's value (empty for a full-budget run)."""
    flags = {f: run.config[f] for f in SUBSET_FLAGS if run.config.get(f) is not None}
    for flag, full in full_budget(run.experiment, run.method, run.config).items():
        value = run.config.get(flag)
        if value is not None and value < full:
            flags[flag] = value
    return dict(sorted(flags.items()))


def budget(run: Run) -> str:
    """``"full"`` or ``"reduced"`` by the rule of the module docstring."""
    return "reduced" if reduced_flags(run) else "full"


def budget_text(run: Run) -> str:
    """``"full"``, or ``"reduced (flag=value, ...)"`` naming what was reduced.

    Importance-learning oracle / train-val baselines have no original budget; their
    training epochs (``--epochs``) are appended, e.g. ``"full; 110 training epochs"``, so
    that baselines trained for different lengths are never averaged together.
    """
    flags = reduced_flags(run)
    text = "reduced (" + ", ".join(f"{k}={v}" for k, v in flags.items()) + ")" if flags else "full"
    epochs = run.config.get("epochs")
    if (run.experiment.startswith("importance_learning.") and run.method in ("oracle", "train-val")
            and epochs is not None):
        text += f"; {epochs} training epoch" + ("" if epochs == 1 else "s")
    return text


def _read_run(path: Path) -> Run:
    """Parse one result.json; raises ValueError with the reason when malformed."""
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot read JSON ({err})") from err
    if not isinstance(data, dict):
        raise ValueError("top level is not an object")
    missing = [k for k in ("experiment", "method", "metrics") if k not in data]
    if missing:
        raise ValueError(f"missing key(s) {missing}")
    if not isinstance(data["metrics"], dict):
        raise ValueError("'metrics' is not an object")
    published = data.get("published") or {}
    config = data.get("config") or {}
    return Run(path=path, experiment=str(data["experiment"]), method=str(data["method"]),
               config=config if isinstance(config, dict) else {},
               published=published if isinstance(published, dict) else {},
               value=metric_value(str(data["experiment"]), data["metrics"]),
               wall_time_s=data.get("wall_time_s"))


def load_runs(root: Path) -> list[Run]:
    """Every readable result.json under ``root``; malformed ones give a warning."""
    runs = []
    for path in sorted(Path(root).rglob("result.json")):
        try:
            runs.append(_read_run(path))
        except ValueError as err:
            warnings.warn(f"skipping malformed {path}: {err}", stacklevel=2)
    return runs


def _is_single_row(published: dict) -> bool:
    return {"table", "mean", "setting"} <= set(published)


def aggregate(runs: list[Run]) -> tuple[list[Group], list[Run]]:
    """Group runs with a published row by (table, experiment, method, setting, budget).

    The budget is `budget_text`: runs at different budgets (full and reduced, or two
    different reductions) are separate rows, never averaged together.

    Returns the groups in the order of the paper's registry where possible, and the
    runs without a single published row ("other runs").
    """
    groups: dict[str, Group] = {}
    other = []
    for run in runs:
        pub = run.published
        if not _is_single_row(pub) or run.value is None:
            other.append(run)
            continue
        key = json.dumps([pub["table"], run.experiment, run.method, pub["setting"],
                          budget_text(run)], sort_keys=True)
        groups.setdefault(key, Group(published=pub)).runs.append(run)
    return [groups[k] for k in sorted(groups, key=_paper_order)], other


def _paper_order(key: str) -> tuple:
    """Sort key: position of the group's published row in the registry."""
    from penalty_tf.paper import published as paper
    table, experiment, method, setting, _ = json.loads(key)
    for i, row in enumerate(paper.PUBLISHED):
        if (row.table, row.experiment, row.method) == (table, experiment, method) \
                and dict(row.setting) == setting:
            return (i, key)
    return (len(paper.PUBLISHED), key)


def difference(ours: float, published: dict) -> Optional[float]:
    """(ours - published mean) / published spread, or None without a spread."""
    sd = published.get("sd")
    if not sd:
        return None
    return (ours - published["mean"]) / sd


def verdict(ours: Optional[float], published: dict, budget_kind: str) -> str:
    """The verdict of the module docstring for one aggregated row."""
    if ours is None:
        return "no value"
    if budget_kind != "full":
        return "not comparable (reduced)"
    diff = difference(ours, published)
    higher = bool(published.get("higher_is_better", True))
    delta = ours - published["mean"]
    if diff is not None and abs(diff) <= 2.0:
        return "within 2 sd"
    if delta == 0:
        word = "equal"
    else:
        word = "better" if (delta > 0) == higher else "worse"
    return word if diff is not None else f"{word} (no sd)"


def _setting_text(setting: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in setting.items()) or "-"


def _pm(mean: Optional[float], sd: Optional[float]) -> str:
    if mean is None:
        return "-"
    return f"{mean:.2f}" + (f" ± {sd:.2f}" if sd is not None else "")


COLUMNS = ("table", "experiment", "setting", "method", "ours", "n", "budget", "published",
           "diff (spread units)", "verdict")


def rows(groups: list[Group]) -> list[dict[str, str]]:
    """One report row (strings) per group."""
    out = []
    for g in groups:
        pub = g.published
        diff = difference(g.mean, pub) if g.mean is not None else None
        spread = f" ({pub['spread']})" if pub.get("spread") == "ci95" else ""
        out.append({
            "table": pub["table"], "experiment": g.runs[0].experiment,
            "setting": _setting_text(pub["setting"]), "method": g.runs[0].method,
            "ours": _pm(g.mean, g.sd), "n": _n_text(g), "budget": budget_text(g.runs[0]),
            "published": _pm(pub["mean"], pub.get("sd")) + spread,
            "diff (spread units)": f"{diff:+.2f}" if diff is not None else "-",
            "verdict": verdict(g.mean, pub, g.budget)})
    return out


def _n_text(group: Group) -> str:
    """Number of runs; names the seeds when some runs repeat a seed (not independent)."""
    seeds = [r.config.get("seed") for r in group.runs if r.value is not None]
    distinct = sorted({str(x) for x in seeds})
    if len(distinct) < len(seeds):
        return f"{len(seeds)} (seeds {', '.join(distinct)})"
    return str(len(seeds))


def _other_lines(other: list[Run], root: Path) -> list[str]:
    lines = []
    for run in other:
        why = "no published row" if not _is_single_row(run.published) else "metric missing"
        wall = f", {run.wall_time_s:.0f} s" if isinstance(run.wall_time_s, (int, float)) else ""
        lines.append(f"- `{_rel(run.path, root)}`: {run.experiment} / {run.method} ({why}{wall})")
    return lines


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def render_markdown(groups: list[Group], other: list[Run], root: Path) -> str:
    """The report as Markdown: one table per paper table, then the other runs."""
    table_rows = rows(groups)
    parts = []
    cols = COLUMNS[1:]
    for table in dict.fromkeys(r["table"] for r in table_rows):
        parts.append(f"### {table}\n")
        parts.append("| " + " | ".join(cols) + " |")
        parts.append("|" + "---|" * len(cols))
        for r in table_rows:
            if r["table"] == table:
                parts.append("| " + " | ".join(r[c] for c in cols) + " |")
        parts.append("")
    if not table_rows:
        parts.append("No run with a published counterpart.\n")
    if other:
        parts.append("### Other runs (no published number to compare)\n")
        parts += _other_lines(other, root)
        parts.append("")
    return "\n".join(parts)


def render_csv(groups: list[Group]) -> str:
    """The report as CSV, one line per group, with the table as first column."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows(groups))
    return buf.getvalue()


def plot_tables(groups: list[Group], plot_dir: Path) -> list[Path]:
    """One PNG per paper table: ours vs published, error bars = sd / spread."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plot_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for table in dict.fromkeys(g.published["table"] for g in groups):
        sel = [g for g in groups if g.published["table"] == table]
        labels = [f"{g.runs[0].experiment.split('.')[-1]}\n{_setting_text(g.published['setting'])}"
                  f"\n{g.runs[0].method}" + ("" if g.budget == "full" else f"\n{budget_text(g.runs[0])}")
                  for g in sel]
        x = list(range(len(sel)))
        fig, ax = plt.subplots(figsize=(max(4.0, 1.6 * len(sel)), 4.0))
        ax.errorbar([i - 0.1 for i in x], [g.mean for g in sel], yerr=[g.sd or 0 for g in sel],
                    fmt="o", capsize=4, label="ours")
        ax.errorbar([i + 0.1 for i in x], [g.published["mean"] for g in sel],
                    yerr=[g.published.get("sd") or 0 for g in sel], fmt="s", capsize=4,
                    label="published")
        ax.set_xticks(x)
        ax.set_xticklabels(labels, fontsize=7)
        units = sorted({g.published.get("unit", "") for g in sel})
        ax.set_ylabel(units[0] if len(units) == 1 else "value (unit differs per row)", fontsize=8)
        ax.set_title(table)
        ax.legend()
        fig.tight_layout()
        path = plot_dir / (_slug(table) + ".png")
        with atomic_file(path) as handle:             # a kill never leaves half a PNG
            fig.savefig(handle, dpi=100, format="png")
        plt.close(fig)
        written.append(path)
    return written


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text).strip("_").lower()


def report(root: Path, fmt: str = "markdown") -> tuple[str, list[Group]]:
    """Load, aggregate and render the runs under ``root``."""
    groups, other = aggregate(load_runs(root))
    text = render_markdown(groups, other, root) if fmt == "markdown" else render_csv(groups)
    return text, groups


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m penalty_tf.paper.report",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("runs_dir", type=Path, help="folder searched for result.json")
    parser.add_argument("--format", choices=["markdown", "csv"], default="markdown")
    parser.add_argument("--out", type=Path, default=None, help="write the report here")
    parser.add_argument("--plot-dir", type=Path, default=None,
                        help="PNG per table (default: the folder of --out)")
    args = parser.parse_args(argv)
    if not args.runs_dir.is_dir():
        parser.error(f"{args.runs_dir} is not a folder")
    warnings.simplefilter("always")
    with warnings.catch_warnings(record=True) as caught:
        text, groups = report(args.runs_dir, args.format)
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    if args.out is not None:
        write_text_atomic(args.out, text)
    else:
        print(text)
    plot_dir = args.plot_dir or (args.out.parent if args.out is not None else None)
    if plot_dir is not None and groups:
        for path in plot_tables(groups, plot_dir):
            print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    from penalty_tf.paper.experiment import run_main

    run_main(main)                                      # an OSError (a full disk): one line
