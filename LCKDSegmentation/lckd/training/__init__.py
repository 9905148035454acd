"""LCKD training: loss, teacher election, schedule, checkpoints, distributed."""
