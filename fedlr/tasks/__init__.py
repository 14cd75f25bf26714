"""Tasks: data + model + local train/eval loops, one ClientApp for all."""
