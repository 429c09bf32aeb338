"""poisoning experiments of penalty-tf."""
