"""Pure rate rules: statistics in, learning rates out. No Flower, no I/O."""
