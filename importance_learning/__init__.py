"""importance_learning experiments of penalty-tf."""
