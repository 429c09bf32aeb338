"""Peak memory of one solver on a large synthetic problem, measured in THIS process.

Run it in a fresh process for every (method, T), so that nothing allocated by an earlier
measurement (TensorFlow's allocator and glibc keep freed memory mapped) pollutes the next::

    python -m benchmarks.memory_probe --method rmd --lower-steps 1000 --dim 50000 --iterations 3

It builds ``--example`` (default SMD20) with block size p = q = r = ``--dim`` (so u and v
have 2·dim float32 entries each), builds the solver with `penalty_tf.solvers.make`
(the original's settings, ``synthetic.run.solver_config``; no XLA unless ``--xla``), and then:

1. records the baseline: the current resident set size (VmRSS) after building the solver,
   before any step;
2. runs one warm-up step with T = 1 (this traces the graph, and compiles it with XLA);
   as T is passed to the compiled step as a tensor, the later steps reuse this graph;
3. resets the kernel's peak-RSS counter (``/proc/self/clear_refs``, Linux >= 4.0) if it
   can, and records the RSS after the warm-up;
4. runs ``--iterations`` steps with T = ``--lower-steps``.

It prints ONE line of JSON on stdout::

    {"ok": true, "method": ..., "lower_steps": ..., "baseline_kib": ..., "peak_kib": ...,
     "extra_kib": peak - baseline, "run_extra_kib": ..., ...}

``peak_kib`` is the peak resident set size of the process (the maximum over the
warm-up and the measured steps). On Linux it is ``VmHWM``, the high-water mark that
``resource.getrusage(RUSAGE_SELF).ru_maxrss`` reports, read from /proc/self/status
because ``ru_maxrss`` also holds the parent's RSS, inherited across fork + exec (see
`max_rss_kib`; ``ru_maxrss_kib`` is printed too). ``extra_kib`` is everything the
solver's steps needed beyond the built problem: the traced graph plus the working memory
of a T-step iteration. ``run_extra_kib`` (None when the peak counter cannot be reset)
is the peak of the measured steps alone minus the RSS after the warm-up, i.e. the
working memory of the T-step iterations without the one-off cost of tracing.

On failure (out of memory, a NaN, a refused estimate) it prints ``{"ok": false,
"error": ...}`` and exits with status 1. ``--max-fraction`` refuses to start a run whose
estimated need (TensorFlow, and RMD keeps T + 1 copies of v) exceeds that fraction of the available
memory, rather than let the kernel's OOM killer pick a victim on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
import traceback
from typing import Any, Optional


def _status_kib(field: str) -> Optional[int]:
    """A ``kB`` field of /proc/self/status (VmRSS, VmHWM), or None where there is none."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def current_rss_kib() -> int:
    """The current resident set size in KiB (VmRSS; falls back to the peak elsewhere)."""
    rss = _status_kib("VmRSS")
    return rss if rss is not None else max_rss_kib()


def ru_maxrss_kib() -> int:
    """``getrusage(RUSAGE_SELF).ru_maxrss`` in KiB (it is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else int(peak)


def max_rss_kib() -> int:
    """The peak resident set size of this process's memory image, in KiB.

    This is ``ru_maxrss`` for a process started from a small parent. But Linux carries the
    peak RSS of the image a process had before ``exec`` into ``ru_maxrss``, and a child
    spawned by Python's `subprocess` (fork or vfork, then exec) starts with its PARENT's
    RSS there: launched from a benchmark that holds 800 MB, ``ru_maxrss`` would say 800 MB
    before the probe allocated anything. So on Linux this returns ``VmHWM`` of
    /proc/self/status, the same counter (the high-water mark from which ru_maxrss is
    taken) for the current image only; ``ru_maxrss`` elsewhere.
    """
    hwm = _status_kib("VmHWM")
    return hwm if hwm is not None else ru_maxrss_kib()


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter VmHWM to the current RSS; False if not possible.

    (``ru_maxrss`` follows, except for a larger peak inherited across exec.)
    """
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        return False
    # The reset sets the peak to the current RSS: check that it worked.
    return max_rss_kib() <= current_rss_kib() + 1024


def available_kib() -> Optional[int]:
    """MemAvailable of /proc/meminfo in KiB, or None."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


#: RSS of a process that has imported TensorFlow and traced a solver (~600 MB), KiB.
TF_PROCESS_KIB = 700 * 1024


def estimated_kib(method: str, dim: int, lower_steps: int) -> float:
    """A generous estimate of what the probe process will need (KiB).

    TensorFlow itself, plus: RMD stores T + 1 iterates of v (2·dim float32 each), and its
    measured RSS grows up to ~2.5 times that over a few steps (allocator fragmentation);
    the other solvers keep a few vectors of the size of u and v.
    """
    vector_kib = 2 * dim * 4 / 1024
    copies = 2.5 * (lower_steps + 1) if method == "rmd" else 20
    return TF_PROCESS_KIB + copies * vector_kib


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.memory_probe",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--method", required=True,
                        help="a method of synthetic.run (gd, rmd, approxgrad, penalty, ...)")
    parser.add_argument("--lower-steps", type=int, required=True, metavar="T")
    parser.add_argument("--dim", type=int, default=50000,
                        help="block size p = q = r (u and v have 2*dim entries each)")
    parser.add_argument("--example", default="SMD20")
    parser.add_argument("--iterations", type=int, default=3, help="measured steps")
    parser.add_argument("--xla", action="store_true", help="jit_compile=True")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-fraction", type=float, default=0.8,
                        help="refuse a run estimated to need more than this fraction of "
                             "the available memory (0 disables the check)")
    return parser


def probe(args: argparse.Namespace) -> dict[str, Any]:
    """Build, warm up and run the solver; return the measurements (raises on failure)."""
    if args.lower_steps < 1 or args.dim < 1 or args.iterations < 1:
        raise ValueError("--lower-steps, --dim and --iterations must be >= 1")
    need = estimated_kib(args.method, args.dim, args.lower_steps)
    avail = available_kib()
    if args.max_fraction > 0 and avail is not None and need > args.max_fraction * avail:
        raise MemoryError(f"refused: {args.method} with T={args.lower_steps}, dim={args.dim} is "
                          f"estimated to need {need / 1024:.0f} MiB, more than "
                          f"{args.max_fraction:.0%} of the {avail / 1024:.0f} MiB available")

    # TensorFlow is imported only now: a refused probe ends fast, and after main's log setting.
    import numpy as np

    from penalty_tf import solvers
    from synthetic.problems import make_problem
    from synthetic.run import solver_config

    problem = make_problem(args.example, rng=np.random.default_rng(args.seed),
                           p=args.dim, q=args.dim, r=args.dim)
    solver = solvers.make(args.method, problem.bilevel(), solver_config(args.method),
                          jit_compile=args.xla, check_finite=True)
    baseline = current_rss_kib()

    start = time.perf_counter()
    solver.step(None, 1)  # traces (and with XLA compiles) the step: T is a tensor argument
    warmup_s = time.perf_counter() - start
    warmup_peak = max_rss_kib()
    reset = reset_peak_rss()
    after_warmup = current_rss_kib()

    peaks, start = [], time.perf_counter()
    for _ in range(args.iterations):
        solver.step(None, args.lower_steps)
        peaks.append(max_rss_kib())
    seconds = time.perf_counter() - start
    peak = max(warmup_peak, peaks[-1])
    return {
        "baseline_kib": baseline,
        "peak_kib": peak,
        "extra_kib": peak - baseline,
        "warmup_peak_kib": warmup_peak,
        "after_warmup_kib": after_warmup,
        "peak_reset": reset,
        "run_extra_kib": peaks[-1] - after_warmup if reset else None,
        "peak_kib_after_each_step": peaks if reset else None,
        "warmup_s": warmup_s,
        "seconds_per_step": seconds / args.iterations,
        "vector_kib": 2 * args.dim * 4 / 1024,
        "ru_maxrss_kib": ru_maxrss_kib(),
        "peak_source": "VmHWM" if _status_kib("VmHWM") is not None else "ru_maxrss",
    }


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    head = {"method": args.method, "lower_steps": args.lower_steps, "dim": args.dim,
            "example": args.example, "iterations": args.iterations, "xla": args.xla}
    try:
        result = dict(head, ok=True, **probe(args))
        status = 0
    except BaseException as error:  # report anything (OOM, NaN, refusal) as JSON
        if isinstance(error, KeyboardInterrupt):
            raise
        detail = traceback.format_exception_only(type(error), error)[-1].strip()
        result = dict(head, ok=False, error=detail[:2000], peak_kib=max_rss_kib())
        status = 1
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    return status


if __name__ == "__main__":
    sys.exit(main())
