"""The original's settings and the budgets of every experiment, as data: one table.

Each experiment family has its module (``importance``, ``few_shot``, ``poisoning``,
``synthetic``) holding three dicts, merged here:

* ``DEFAULTS[(experiment, method)]``: the original's value of every setting of that run
  (solver config fields such as ``lr_u``, ``rho0``, and run fields such as ``epochs``,
  ``lower_steps``); the scripts' flags default to these;
* ``FULL_BUDGET[(experiment, method or "*")]``: the budget flags of a full (paper) run, which
  `penalty_tf.paper.report` uses to mark a run "reduced";
* ``REDUCED[experiment]``: the extra flags of the documented reduced budget
  (`penalty_tf.paper.reproduce --budget reduced`).

Experiment names are the scripts' modules (``importance_learning.mnist``); methods the
``--method`` values.
"""

from __future__ import annotations

from typing import Any

from penalty_tf.paper.defaults import few_shot, importance, poisoning, synthetic

FAMILIES = (importance, few_shot, poisoning, synthetic)

DEFAULTS: dict[tuple[str, str], dict[str, Any]] = {}
FULL_BUDGET: dict[tuple[str, str], dict[str, int]] = {}
REDUCED: dict[str, tuple[str, ...]] = {}
for _family in FAMILIES:
    DEFAULTS.update(_family.DEFAULTS)
    FULL_BUDGET.update(_family.FULL_BUDGET)
    REDUCED.update(_family.REDUCED)


def defaults(experiment: str, method: str) -> dict[str, Any]:
    """A copy of the original's settings of ``experiment`` run with ``method``."""
    try:
        return dict(DEFAULTS[(experiment, method)])
    except KeyError:
        known = sorted(m for e, m in DEFAULTS if e == experiment)
        raise KeyError(f"no defaults for {experiment} --method {method}; known: {known}") from None
