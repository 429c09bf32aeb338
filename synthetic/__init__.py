"""synthetic experiments of penalty-tf."""
