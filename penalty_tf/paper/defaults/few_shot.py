"""The original's settings and budgets of the few_shot experiments (see `penalty_tf.paper.defaults`)."""

from __future__ import annotations

from typing import Any

DEFAULTS: dict[tuple[str, str], dict[str, Any]] = {}
FULL_BUDGET: dict[tuple[str, str], dict[str, int]] = {}
REDUCED: dict[str, tuple[str, ...]] = {}
