"""Evidence behind every published number: record runs into ``results/``, check claims.

    python -m penalty_tf.paper.evidence run NAME [--note TEXT] -- python -m poisoning.untargeted ...
    python -m penalty_tf.paper.evidence check            # every README claim against its result file
    python -m penalty_tf.paper.evidence list             # the recorded runs, their commands and dates
    python -m penalty_tf.paper.evidence blocks           # rewrite the README report blocks from results/

``run`` executes the command with ``--out <folder>`` appended (or with ``{out}`` in the
command replaced by it), and on success moves what the run wrote to ``results/NAME/``
beside an ``evidence.json``: the exact command, the seed, start and end time (UTC), wall
time, the git commit (and whether the tree had uncommitted changes), the load average
before and after, the CPU model, core count and affinity, the thread environment
variables and the library versions. Checkpoints and files over 2 MB are not kept;
evidence.json names them. A failed command leaves ``results/`` untouched.

A README number is *backed* when ``results/claims.json`` has a claim for it: the exact
README text that shows it, and for each number in that text the result file, the key inside
it and the format it is printed with. ``check`` (and ``tests/test_evidence.py``) verify that
every claimed text is in its README, that each value printed from its result file with its
format appears in that text, and that the README has no measured-looking number that is
neither claimed, nor a published number of the paper, nor on the allow list of
``claims.json`` (settings such as ``0.25`` noise, versions); a README's report block
(``<!-- report: results -->`` … ``<!-- /report -->``) must equal the tables of
``python -m penalty_tf.paper.report results``. Format of a claim::

    {"file": "README.md", "text": "| MNIST small-scale hyper-cleaning, 50 % noise | 90.54 % |",
     "values": [{"result": "franceschi.mnist_small.penalty",
                 "key": "metrics.test_accuracy", "format": ".2f"}]}

``key`` is a dotted path into result.json (list indices allowed, e.g.
``metrics.results.0.final_err_mean``); an optional ``scale`` multiplies the value first (e.g.
``0.0166667`` to print seconds as minutes) and ``source`` names another file of the folder
than result.json (``"evidence"`` for evidence.json).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from penalty_tf.files import write_text_atomic

__all__ = ["REPO_ROOT", "RESULTS", "record", "load_claims", "check_claims", "check_report_blocks",
           "measured_numbers", "unbacked_numbers", "main"]

REPO_ROOT = Path(__file__).resolve().parents[2]
RESULTS = REPO_ROOT / "results"
MAX_KEPT_BYTES = 2_000_000
THREAD_VARIABLES = ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS",
                    "TF_ENABLE_ONEDNN_OPTS", "PENALTY_TF_DATA")


# ------------------------------------------------------------------------- recording


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else ""


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def machine_state() -> dict[str, Any]:
    """Load average (1, 5, 15 min), CPU model, core count and the process's affinity."""
    affinity = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {"load_average": list(os.getloadavg()), "cpu_model": _cpu_model(),
            "cpu_count": os.cpu_count(), "cpu_affinity": affinity}


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _seed_of(argv: Sequence[str]) -> Optional[int | list[int]]:
    """The value of ``--seed N``, or the list of ``--seeds N M ...`` (None if neither)."""
    for i, arg in enumerate(argv[:-1]):
        if arg == "--seed":
            try:
                return int(argv[i + 1])
            except ValueError:
                return None
        if arg == "--seeds":
            seeds = []
            for value in argv[i + 1:]:
                if not value.lstrip("-").isdigit():
                    break
                seeds.append(int(value))
            return seeds or None
    return None


def _with_out(argv: Sequence[str], out: Path) -> list[str]:
    """``argv`` with ``{out}`` replaced by ``out``, or with ``--out out`` appended."""
    if any("{out}" in a for a in argv):
        return [a.replace("{out}", str(out)) for a in argv]
    if "--out" in argv:
        raise SystemExit("error: the command must not set --out; evidence chooses the folder "
                         "(write {out} where the script wants a different spelling)")
    return [*argv, "--out", str(out)]


def _display(argv: Sequence[str]) -> str:
    """The command as a user would type it (``python`` for the interpreter)."""
    words = ["python" if a == sys.executable else a for a in argv]
    return " ".join(w if re.fullmatch(r"[\w@%+=:,./{}-]+", w) else repr(w) for w in words)


def _keep(tmp: Path, dest: Path) -> list[str]:
    """Move the files of ``tmp`` into ``dest`` except checkpoints and files over
    `MAX_KEPT_BYTES`; return the names (and sizes) of those left out."""
    omitted = []
    for path in sorted(p for p in tmp.rglob("*") if p.is_file()):
        rel = path.relative_to(tmp)
        if path.stat().st_size > MAX_KEPT_BYTES or path.name.startswith("checkpoint"):
            omitted.append(f"{rel} ({path.stat().st_size} bytes)")
            continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(path), dest / rel)
    return omitted


def record(name: str, argv: Sequence[str], *, results: Path = RESULTS, note: str = "") -> Path:
    """Run ``argv`` and keep its outputs with their evidence in ``results/name``.

    Returns the folder. Raises SystemExit (naming the exit status) when the command fails;
    an older record of the same name is then left as it was.
    """
    if not re.fullmatch(r"[\w.+-]+", name):
        raise SystemExit(f"error: bad name {name!r}: use letters, digits and . _ + -")
    results.mkdir(parents=True, exist_ok=True)
    display_out = Path("results") / name if results == RESULTS else results / name
    with tempfile.TemporaryDirectory(prefix=f".{name}.", dir=results) as tmp_name:
        tmp = Path(tmp_name)
        run_dir = tmp / "out"
        run_dir.mkdir()   # for commands that write a file into {out}
        argv = [sys.executable if a == "python" else a for a in argv]
        commit = _git("rev-parse", "HEAD")   # before the run: the code it ran
        dirty = bool(_git("status", "--porcelain", "--untracked-files=no"))
        before, started, t0 = machine_state(), _now(), time.perf_counter()
        done = subprocess.run(_with_out(argv, run_dir), cwd=REPO_ROOT)
        wall = time.perf_counter() - t0
        if done.returncode != 0:
            raise SystemExit(f"error: the command failed with exit status {done.returncode}; "
                             f"nothing was recorded in {display_out}")
        staged = tmp / "staged"
        staged.mkdir()
        omitted = _keep(run_dir, staged)
        from penalty_tf.paper.experiment import versions, write_json_atomic
        write_json_atomic(staged / "evidence.json", {
            "name": name, "command": _display(_with_out(argv, display_out)),
            "seed": _seed_of(argv), "started": started, "finished": _now(),
            "wall_time_s": round(wall, 3), "git_commit": commit,
            "git_uncommitted_changes": dirty,
            "machine_before": before, "machine_after": machine_state(),
            "environment": {k: os.environ[k] for k in THREAD_VARIABLES if k in os.environ},
            "python": platform.python_version(), "versions": versions(),
            "omitted_files": omitted, "note": note})
        dest = results / name
        old = tmp / "old"
        if dest.exists():
            dest.rename(old)
        staged.rename(dest)
    return dest


# -------------------------------------------------------------------------- claims


@dataclass(frozen=True)
class Problem:
    """One disagreement between a README and its evidence."""

    file: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.message}"


def load_claims(results: Path = RESULTS) -> dict[str, Any]:
    """``results/claims.json``: ``{"claims": [...], "allowed": {file: [[number, why], ...]}}``."""
    return json.loads((results / "claims.json").read_text(encoding="utf-8"))


def lookup(data: Any, key: str) -> Any:
    """``data`` at the dotted path ``key`` (integers index lists)."""
    for part in key.split("."):
        data = data[int(part)] if isinstance(data, list) else data[part]
    return data


def _value(spec: dict[str, Any], name: str, results: Path) -> float:
    source = spec.get("source", "result.json")
    source = "evidence.json" if source == "evidence" else source
    data = json.loads((results / name / source).read_text(encoding="utf-8"))
    return lookup(data, spec["key"])


def formatted_value(spec: dict[str, Any], results: Path = RESULTS) -> str:
    """The value a claim's ``values`` entry names, printed with its format.

    ``result`` names one record; or ``results`` lists several (e.g. the seeds of a row) and
    ``stat`` says which statistic of their values is printed: ``mean`` or ``sd`` (sample
    standard deviation, ddof = 1, as `penalty_tf.paper.report`).
    """
    if "results" in spec:
        values = [_value(spec, name, results) for name in spec["results"]]
        mean = sum(values) / len(values)
        if spec["stat"] == "mean":
            value = mean
        elif spec["stat"] == "sd":
            value = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5
        else:
            raise ValueError(f"unknown stat {spec['stat']!r} (mean or sd)")
    else:
        value = _value(spec, spec["result"], results)
    if "scale" in spec:
        value = value * spec["scale"]
    return format(value, spec.get("format", ""))


def _numbers_in(text: str) -> list[str]:
    return re.findall(r"(?<![\w.])\d+(?:[.,]\d+)*(?:e[-+]?\d+)?(?![\w])", text)


def _names(spec: dict[str, Any]) -> str:
    return spec["result"] if "result" in spec else "+".join(spec["results"])


def check_claims(results: Path = RESULTS, root: Path = REPO_ROOT) -> list[Problem]:
    """Every claim's text is in its file and shows its values (see the module docstring)."""
    problems = []
    for claim in load_claims(results)["claims"]:
        file, text = claim["file"], claim["text"]
        content = (root / file).read_text(encoding="utf-8")
        if text not in content:
            problems.append(Problem(file, f"claimed text not found: {text!r}"))
            continue
        position = 0
        numbers = _numbers_in(text)
        for spec in claim["values"]:
            try:
                shown = formatted_value(spec, results)
            except (OSError, KeyError, IndexError, ValueError, TypeError) as err:
                problems.append(Problem(file, f"{_names(spec)}:{spec['key']} unreadable ({err!r})"))
                continue
            found = shown in numbers[position:]
            if not found:
                problems.append(Problem(file, f"{text!r} does not show {shown} "
                                              f"({_names(spec)}:{spec['key']})"))
            else:
                position += numbers[position:].index(shown) + 1
    return problems


#: A measured-looking number: a decimal, or an integer with a unit of time or a ratio.
MEASURED = re.compile(r"(?<![\w.])(\d+\.\d+|\d+(?:,\d{3})*\s?(?:ms|s|min|h|×)(?![\w]))")


def prose_lines(text: str) -> list[str]:
    """The lines of a Markdown text outside fenced code blocks and HTML comments."""
    out, fenced = [], False
    for line in re.sub(r"<!--.*?-->", "", text, flags=re.S).splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            out.append(line)
    return out


def measured_numbers(text: str) -> list[str]:
    """Measured-looking numbers in the prose of ``text`` (code spans are skipped)."""
    found = []
    for line in prose_lines(text):
        line = re.sub(r"`[^`]*`", "", line)
        found += [m.group(1).replace(" ", "") for m in MEASURED.finditer(line)]
    return found


def _published_numbers() -> set[str]:
    from penalty_tf.paper import published as paper
    numbers = set()
    for row in paper.PUBLISHED:
        for value in (row.mean, row.sd):
            if value is not None:
                numbers |= {f"{value:.2f}", f"{value:.1f}", f"{value:g}", f"{value}"}
    return numbers


#: A report block of a README: ``<!-- report: FOLDER -->`` … ``<!-- /report -->``, the
#: tables of ``python -m penalty_tf.paper.report FOLDER`` (checked by `check_report_blocks`).
REPORT_BLOCK = re.compile(r"<!-- report: (\S+) -->\n(.*?)<!-- /report -->", re.S)


def report_tables(folder: Path) -> str:
    """The report over ``folder`` without its "Other runs" section, as README blocks hold it."""
    from penalty_tf.paper import report
    text, _ = report.report(folder)
    return text.split("### Other runs")[0].strip()


def check_report_blocks(root: Path = REPO_ROOT) -> list[Problem]:
    """Every report block of the READMEs equals the report over its folder."""
    problems = []
    for file in readmes(root):
        for folder, block in REPORT_BLOCK.findall((root / file).read_text(encoding="utf-8")):
            if block.strip() != report_tables(root / folder):
                problems.append(Problem(file, f"the report block of {folder} differs from "
                                              f"python -m penalty_tf.paper.report {folder}; regenerate it with "
                                              "python -m penalty_tf.paper.evidence blocks"))
    return problems


def update_report_blocks(root: Path = REPO_ROOT) -> list[str]:
    """Rewrite every report block of the READMEs from its folder; return the files changed."""
    changed = []
    for file in readmes(root):
        path = root / file
        text = path.read_text(encoding="utf-8")
        new = REPORT_BLOCK.sub(lambda m: f"<!-- report: {m.group(1)} -->\n"
                                         f"{report_tables(root / m.group(1))}\n<!-- /report -->", text)
        if new != text:
            write_text_atomic(path, new)
            changed.append(file)
    return changed


def unbacked_numbers(results: Path = RESULTS, root: Path = REPO_ROOT) -> list[Problem]:
    """Measured-looking README numbers that no claim, report block, published row or allow
    entry covers."""
    data = load_claims(results)
    published = _published_numbers()
    problems = []
    files = sorted({c["file"] for c in data["claims"]} | set(data.get("allowed", {})) | set(readmes(root)))
    for file in files:
        content = REPORT_BLOCK.sub("", (root / file).read_text(encoding="utf-8"))
        for claim in data["claims"]:
            if claim["file"] == file:
                content = content.replace(claim["text"], "")
        allowed = {str(entry[0]) for entry in data.get("allowed", {}).get(file, [])}
        for number in measured_numbers(content):
            if number not in published and number not in allowed:
                problems.append(Problem(file, f"{number} has no evidence (no claim in "
                                              "results/claims.json, not a published number, "
                                              "not allowed)"))
    return problems


def readmes(root: Path = REPO_ROOT) -> list[str]:
    """README.md and the README.md of every top-level folder (relative paths)."""
    found = ["README.md"] if (root / "README.md").exists() else []
    found += sorted(str(p.relative_to(root)) for p in root.glob("*/README.md")
                    if p.parent.name != "results")
    return found


# ---------------------------------------------------------------------------- CLI


def _list(results: Path) -> str:
    lines = []
    for path in sorted(results.glob("*/evidence.json")):
        ev = json.loads(path.read_text())
        lines.append(f"{ev['name']}\t{ev['finished']}\t{ev['command']}")
    return "\n".join(lines) or "(no recorded runs)"


def main(argv: Optional[list[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, command = argv[:cut], argv[cut + 1:]
    parser = argparse.ArgumentParser(prog="python -m penalty_tf.paper.evidence", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="action", required=True)
    run = sub.add_parser("run", help="run a command and record its outputs as results/NAME")
    run.add_argument("name")
    run.add_argument("--note", default="", help="free text kept in evidence.json (e.g. the load)")
    sub.add_parser("check", help="check every README claim against its result file")
    sub.add_parser("list", help="list the recorded runs")
    sub.add_parser("blocks", help="rewrite the README report blocks from their folders")
    args = parser.parse_args(argv)
    if args.action == "run":
        if not command:
            parser.error("give the command after --")
        print(f"recorded {record(args.name, command, note=args.note)}")
        return 0
    if args.action == "list":
        print(_list(RESULTS))
        return 0
    if args.action == "blocks":
        print("rewrote: " + (", ".join(update_report_blocks()) or "nothing (up to date)"))
        return 0
    problems = check_claims() + unbacked_numbers() + check_report_blocks()
    for problem in problems:
        print(problem)
    print(f"{len(load_claims()['claims'])} claims, {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
