"""few_shot experiments of penalty-tf."""
