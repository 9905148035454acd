"""How the models are made and measured: `training/`, 15-subset `evaluate`, k-fold `crossval`,
quality `calibration`, clinical-slice `degrade` (with `simulate`, the scan effects training shares),
and the `phantom` / `rawphantom` generators. May import the core (base, io, prep, model,
inference), never the front ends."""
