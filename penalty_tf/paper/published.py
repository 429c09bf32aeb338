"""The published numbers of Mehra & Hamm (ACML 2021), as data.

Every number the paper reports for an experiment of this project is one
:class:`PublishedNumber` in the tuple :data:`PUBLISHED`. Scripts look up the number
for their setting and store it in the ``"published"`` field of ``result.json``::

    from penalty_tf.paper import published as paper
    paper.published_dict(experiment="poisoning.untargeted", method="penalty", npoison=10)
    # {'table': 'Table 5', ..., 'mean': 83.29, 'sd': 0.43, 'spread': 'sd', ...}

Sources (see docs/original.md §4, checked against the paper text):

* Table 2 - wall-clock seconds per 10,000 upper-level iterations on the synthetic
  examples (mean +- s.d. of 10 runs). The paper calls them "Example 1..4"; the mapping
  Example k <-> [SMD20, SMD21, SMD24, SMD23][k-1] is inferred from the original driver's
  order. Absolute times depend on hardware and on TF1 graph mode: compare ratios only.
* Table 3 - test accuracy (%) of importance learning with noisy labels (5 runs).
* Section 3.2 - the comparisons with Ren et al. (WRN-28-10, 36 % noise) and with
  Franceschi et al. (softmax regression, MNIST subset, 50 % noise).
* Table 4 - few-shot accuracy (%): Omniglot mean +- s.d., Mini-ImageNet +- 95 % CI.
  Only the ApproxGrad and Penalty columns are produced by this code; the other
  columns are literature values quoted by the paper (RMD = Franceschi et al. 2018).
* Table 5 - MNIST poisoning with logistic regression (5 runs): untargeted (test
  accuracy, lower = stronger attack) and targeted (success rate, higher = stronger
  attack). RMD values are quoted from Munoz-Gonzalez et al. (2017), without s.d.
* Section 3.4 / Appendix E.4.1 - clean-label dog-fish attack success (%).

``higher_is_better`` is from the point of view of the method being evaluated (for
poisoning: the attacker).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping, Optional

__all__ = ["PublishedNumber", "PUBLISHED", "lookup", "published_dict"]


@dataclass(frozen=True)
class PublishedNumber:
    """One number reported in the paper.

    Attributes:
        table: where in the paper, e.g. ``"Table 3"``.
        experiment: experiment name, e.g. ``"importance_learning.mnist"``.
        setting: the experiment's setting, e.g. ``{"noise": 0.25}`` (read-only).
        method: method name as used by the scripts' ``--method`` flags, or a
            literature baseline (``"maml"``, ``"ren"``, ...).
        mean: the reported value (mean over runs).
        sd: the reported spread, or ``None`` when the paper gives none.
        spread: what ``sd`` is: ``"sd"`` (standard deviation), ``"ci95"`` (95 %
            confidence interval half-width) or ``None``.
        higher_is_better: whether a larger value is better for the method.
        unit: the unit of ``mean`` and ``sd``.
        note: provenance or caveats.
    """

    table: str
    experiment: str
    setting: Mapping[str, Any] = field(hash=False)
    method: str
    mean: float
    sd: Optional[float]
    spread: Optional[str]
    higher_is_better: bool
    unit: str
    note: str = ""

    def __post_init__(self) -> None:
        # Freeze the setting so that the shared table cannot be changed by accident.
        object.__setattr__(self, "setting", MappingProxyType(dict(self.setting)))
        if self.spread not in ("sd", "ci95", None):
            raise ValueError(f"spread must be 'sd', 'ci95' or None, got {self.spread!r}")
        if (self.sd is None) != (self.spread is None):
            raise ValueError("sd and spread must both be given or both be None")

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready plain dict of all fields."""
        return {
            "table": self.table,
            "experiment": self.experiment,
            "setting": dict(self.setting),
            "method": self.method,
            "mean": self.mean,
            "sd": self.sd,
            "spread": self.spread,
            "higher_is_better": self.higher_is_better,
            "unit": self.unit,
            "note": self.note,
        }


def _cell(text: str) -> tuple[float, Optional[float]]:
    """Parse a table cell ``"12.3 ± 0.4"`` or ``"85"`` into (mean, sd or None)."""
    if "±" in text:
        mean, sd = text.split("±")
        return float(mean), float(sd)
    return float(text), None


def _rows(table: str, experiment: str, setting: Mapping[str, Any], cells: Mapping[str, str],
          *, spread: str, higher_is_better: bool, unit: str,
          notes: Optional[Mapping[str, str]] = None) -> list[PublishedNumber]:
    """Turn one table row ``{method: "mean ± sd"}`` into PublishedNumbers.

    A cell without "±" gets ``sd=None, spread=None``; cells ``"–"`` (no value in the
    paper) are skipped.
    """
    notes = notes or {}
    rows = []
    for method, text in cells.items():
        if text.strip() in ("–", "-"):
            continue
        mean, sd = _cell(text)
        rows.append(PublishedNumber(
            table=table, experiment=experiment, setting=dict(setting), method=method,
            mean=mean, sd=sd, spread=spread if sd is not None else None,
            higher_is_better=higher_is_better, unit=unit, note=notes.get(method, "")))
    return rows


# ------------------------------------------------------------------ Table 2

_TABLE2_METHODS = ("gd", "rmd", "approxgrad", "penalty")
# Example k of the paper <-> k-th entry of the original driver's list (inferred).
_TABLE2 = {
    "SMD20": {1: ("7.4 ± 0.3", "15.0 ± 0.1", "17.4 ± 0.2", "17.2 ± 0.1"),
              5: ("14.3 ± 0.1", "51.4 ± 0.3", "39.3 ± 2.3", "34.3 ± 0.3"),
              10: ("23.2 ± 0.1", "95.4 ± 0.2", "60.9 ± 0.3", "57.0 ± 1.0")},
    "SMD21": {1: ("7.7 ± 0.1", "18.5 ± 0.1", "17.2 ± 0.3", "17.4 ± 0.2"),
              5: ("17.3 ± 0.1", "62.7 ± 0.1", "37.9 ± 0.1", "35.0 ± 0.2"),
              10: ("22.4 ± 2.6", "115.0 ± 0.4", "64.2 ± 0.3", "52.7 ± 1.4")},
    "SMD24": {1: ("8.2 ± 0.2", "18.8 ± 0.1", "19.8 ± 0.1", "19.1 ± 0.1"),
              5: ("17.4 ± 0.1", "72.4 ± 0.1", "47.1 ± 0.4", "38.6 ± 0.4"),
              10: ("28.7 ± 0.6", "125.0 ± 9.3", "80.6 ± 0.3", "62.7 ± 0.1")},
    "SMD23": {1: ("7.9 ± 0.1", "19.5 ± 0.1", "20.4 ± 0.0", "19.6 ± 0.1"),
              5: ("16.9 ± 0.2", "72.8 ± 0.5", "48.4 ± 0.6", "40.2 ± 0.1"),
              10: ("28.3 ± 0.2", "138.0 ± 0.2", "81.2 ± 1.6", "58.0 ± 4.3")},
}


def _table2() -> list[PublishedNumber]:
    rows = []
    for k, (example, by_t) in enumerate(_TABLE2.items(), start=1):
        note = (f"paper's 'Example {k}' (mapping to {example} inferred from the original "
                "driver's order); TF1 graph-mode timings on the authors' hardware: "
                "compare ratios between methods, not absolute seconds")
        for lower_steps, cells in by_t.items():
            rows += _rows("Table 2", "synthetic", {"example": example, "lower_steps": lower_steps},
                          dict(zip(_TABLE2_METHODS, cells)), spread="sd",
                          higher_is_better=False, unit="s per 10,000 upper-level iterations",
                          notes={m: note for m in _TABLE2_METHODS})
    return rows


# ------------------------------------------------------------------ Table 3

_TABLE3_METHODS = ("oracle", "val-only", "train-val", "approxgrad", "penalty")
_TABLE3 = [
    ("importance_learning.mnist", 0.25,
     ("99.3 ± 0.1", "90.5 ± 0.3", "83.9 ± 1.3", "98.11 ± 0.08", "98.89 ± 0.04")),
    ("importance_learning.mnist", 0.5,
     ("99.3 ± 0.1", "90.5 ± 0.3", "60.8 ± 2.5", "97.27 ± 0.15", "97.51 ± 0.07")),
    ("importance_learning.cifar10", 0.25,
     ("82.9 ± 1.1", "70.3 ± 1.8", "79.1 ± 0.8", "71.59 ± 0.87", "79.67 ± 1.01")),
    ("importance_learning.cifar10", 0.5,
     ("80.7 ± 1.2", "70.3 ± 1.8", "72.2 ± 1.8", "68.08 ± 0.83", "79.03 ± 1.19")),
    ("importance_learning.svhn", 0.25,
     ("91.1 ± 0.5", "70.6 ± 1.5", "71.6 ± 1.4", "80.05 ± 1.37", "88.12 ± 0.16")),
    ("importance_learning.svhn", 0.5,
     ("89.8 ± 0.6", "70.6 ± 1.5", "47.9 ± 1.3", "74.18 ± 1.05", "85.21 ± 0.34")),
]


def _table3() -> list[PublishedNumber]:
    rows = []
    for experiment, noise, cells in _TABLE3:
        rows += _rows("Table 3", experiment, {"noise": noise}, dict(zip(_TABLE3_METHODS, cells)),
                      spread="sd", higher_is_better=True, unit="% test accuracy")
    return rows


# --------------------------------------------------- Section 3.2 comparisons

def _comparisons() -> list[PublishedNumber]:
    ren = _rows("Sec. 3.2 (Ren et al.)", "importance_learning.cifar10_wrn",
                {"noise": 0.36, "lower_steps": 1},
                {"penalty": "87.41 ± 0.26", "ren": "86.92 ± 0.19"},
                spread="sd", higher_is_better=True, unit="% test accuracy",
                notes={"penalty": "WRN-28-10, uniform flip noise, 1,000 validation points; "
                                  "not implemented in the original repository",
                       "ren": "literature value (Ren et al. 2018)"})
    franceschi = _rows("Sec. 3.2 (Franceschi et al.)", "importance_learning.mnist_small",
                       {"noise": 0.5},
                       {"penalty": "90.77", "franceschi": "90.09"},
                       spread="sd", higher_is_better=True, unit="% test accuracy",
                       notes={"penalty": "softmax regression retrained on points with "
                                         "importance > 0.9 plus the validation set; "
                                         "single number, no spread reported",
                              "franceschi": "literature value (Franceschi et al. 2017, RMD)"})
    return ren + franceschi


# ------------------------------------------------------------------ Table 4

_TABLE4_METHODS = ("maml", "imaml", "protonet", "relationnet", "snail", "rmd", "approxgrad",
                   "penalty")
_TABLE4 = [
    ("few_shot.omniglot", 5, 1, "sd",
     ("98.7", "99.50 ± 0.26", "98.8", "99.6 ± 0.2", "99.1", "98.6", "97.75 ± 0.06",
      "97.83 ± 0.35")),
    ("few_shot.omniglot", 5, 5, "sd",
     ("99.9", "99.74 ± 0.11", "99.7", "99.8 ± 0.1", "99.8", "99.5", "99.51 ± 0.05",
      "99.45 ± 0.05")),
    ("few_shot.omniglot", 20, 1, "sd",
     ("95.8", "96.18 ± 0.36", "96.0", "97.6 ± 0.2", "97.6", "95.5", "94.69 ± 0.22",
      "94.06 ± 0.17")),
    ("few_shot.omniglot", 20, 5, "sd",
     ("98.9", "99.14 ± 0.10", "98.9", "99.1 ± 0.1", "99.4", "98.4", "98.46 ± 0.08",
      "98.47 ± 0.08")),
    ("few_shot.miniimagenet", 5, 1, "ci95",
     ("48.70 ± 1.75", "49.30 ± 1.88", "49.42 ± 0.78", "50.44 ± 0.82", "55.71 ± 0.99",
      "50.54 ± 0.85", "43.74 ± 1.75", "53.17 ± 0.96")),
    ("few_shot.miniimagenet", 5, 5, "ci95",
     ("63.11 ± 0.92", "–", "68.20 ± 0.66", "65.32 ± 0.82", "68.88 ± 0.92", "64.53 ± 0.68",
      "65.56 ± 0.67", "67.74 ± 0.71")),
]
_TABLE4_NOTES = {
    "maml": "literature value (Finn et al. 2017)",
    "imaml": "literature value (Rajeswaran et al. 2019)",
    "protonet": "literature value (Snell et al. 2017)",
    "relationnet": "literature value (Sung et al. 2018)",
    "snail": "literature value (Mishra et al. 2017)",
    "rmd": "literature value (Franceschi et al. 2018); not produced by this code",
}


def _table4() -> list[PublishedNumber]:
    rows = []
    for experiment, nway, kshot, spread, cells in _TABLE4:
        rows += _rows("Table 4", experiment, {"nway": nway, "kshot": kshot},
                      dict(zip(_TABLE4_METHODS, cells)), spread=spread,
                      higher_is_better=True, unit="% meta-test accuracy (600 tasks)",
                      notes=_TABLE4_NOTES)
    return rows


# ------------------------------------------------------------------ Table 5

_TABLE5_METHODS = ("label-flip", "rmd", "approxgrad", "penalty")
_TABLE5_UNTARGETED = {
    10: ("86.71 ± 0.32", "85", "82.09 ± 0.84", "83.29 ± 0.43"),
    20: ("86.23 ± 0.98", "83", "77.54 ± 0.57", "78.14 ± 0.53"),
    30: ("85.17 ± 0.96", "82", "74.41 ± 1.14", "75.14 ± 1.09"),
    40: ("84.93 ± 0.55", "81", "71.88 ± 0.40", "72.70 ± 0.46"),
    50: ("84.39 ± 1.06", "80", "68.69 ± 0.86", "69.48 ± 1.93"),
    60: ("84.64 ± 0.69", "79", "66.91 ± 0.89", "67.59 ± 1.17"),
}
_TABLE5_TARGETED = {
    10: ("7.76 ± 1.07", "10", "18.84 ± 1.90", "17.40 ± 3.00"),
    20: ("12.08 ± 2.13", "15", "39.64 ± 3.72", "41.64 ± 4.43"),
    30: ("18.36 ± 1.23", "25", "52.76 ± 2.69", "51.40 ± 2.72"),
    40: ("24.41 ± 2.05", "35", "60.01 ± 1.61", "61.16 ± 1.34"),
    50: ("30.41 ± 4.24", "–", "65.61 ± 4.01", "65.52 ± 2.85"),
    60: ("32.88 ± 3.47", "–", "71.48 ± 4.24", "70.01 ± 2.95"),
}
_TABLE5_NOTES = {
    "rmd": "literature value (Munoz-Gonzalez et al. 2017), no spread reported",
    "label-flip": "label-flipping baseline (not implemented in the original repository)",
}


def _table5() -> list[PublishedNumber]:
    rows = []
    for npoison, cells in _TABLE5_UNTARGETED.items():
        rows += _rows("Table 5", "poisoning.untargeted", {"npoison": npoison},
                      dict(zip(_TABLE5_METHODS, cells)), spread="sd",
                      higher_is_better=False,
                      unit="% test accuracy after retraining (lower = stronger attack)",
                      notes=_TABLE5_NOTES)
    for npoison, cells in _TABLE5_TARGETED.items():
        rows += _rows("Table 5", "poisoning.targeted", {"npoison": npoison},
                      dict(zip(_TABLE5_METHODS, cells)), spread="sd",
                      higher_is_better=True,
                      unit="% attack success (test eights classified as 3)",
                      notes=_TABLE5_NOTES)
    return rows


# ---------------------------------------------------------- clean-label attack

def _clean_label() -> list[PublishedNumber]:
    return _rows("Sec. 3.4 / App. E.4.1", "poisoning.clean_label", {},
                 {"penalty": "100", "koh-liang": "57", "shafahi": "100"},
                 spread="sd", higher_is_better=True,
                 unit="% attack success (one poison per target)",
                 notes={"penalty": "dog vs. fish, Inception-v3 features, setting of "
                                   "Koh & Liang (2017) Sec. 5.2",
                        "koh-liang": "literature value (Koh & Liang 2017)",
                        "shafahi": "literature value (Shafahi et al. 2018)"})


PUBLISHED: tuple[PublishedNumber, ...] = tuple(
    _table2() + _table3() + _comparisons() + _table4() + _table5() + _clean_label())
"""Every published number, in the order of the paper."""


# ------------------------------------------------------------------- queries

def _same(a: Any, b: Any) -> bool:
    """Setting values match: floats up to rounding (0.25 vs 0.250000001), else ==."""
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) \
            and not isinstance(a, bool) and not isinstance(b, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def lookup(table: Optional[str] = None, experiment: Optional[str] = None,
           method: Optional[str] = None, **setting: Any) -> list[PublishedNumber]:
    """Return the published numbers matching every given criterion.

    ``table``, ``experiment`` and ``method`` are compared exactly (methods are
    lower-case, e.g. ``"penalty"``); each keyword in ``setting`` must be present in a
    row's setting with an equal value (numbers compared up to rounding), e.g.
    ``lookup(experiment="synthetic", example="SMD20", lower_steps=10)``.
    Criteria left out match everything.
    """
    matches = []
    for row in PUBLISHED:
        if table is not None and row.table != table:
            continue
        if experiment is not None and row.experiment != experiment:
            continue
        if method is not None and row.method != method:
            continue
        if all(key in row.setting and _same(row.setting[key], value)
               for key, value in setting.items()):
            matches.append(row)
    return matches


def published_dict(table: Optional[str] = None, experiment: Optional[str] = None,
                   method: Optional[str] = None, **setting: Any) -> dict[str, Any]:
    """Return the single matching published number as a JSON-ready dict, or ``{}``.

    Intended for the ``"published"`` field of ``result.json``. Takes the same
    arguments as :func:`lookup`.

    Raises:
        ValueError: when the criteria match more than one number (give the method
            and the full setting).
    """
    matches = lookup(table=table, experiment=experiment, method=method, **setting)
    if not matches:
        return {}
    if len(matches) > 1:
        raise ValueError(
            f"{len(matches)} published numbers match experiment={experiment!r}, "
            f"method={method!r}, setting={setting!r}; give the method and the full setting")
    return matches[0].to_dict()
