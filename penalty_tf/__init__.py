"""penalty-tf: bilevel optimisation by the penalty method in TensorFlow 2 / Keras 3.

A port of the research code of Mehra & Hamm, "Penalty Method for Inversion-Free Deep
Bilevel Optimization" (ACML 2021).
"""

__version__ = "0.1.0"
