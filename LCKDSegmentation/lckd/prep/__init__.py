"""Scans onto the model's terms: foreground rules, grids and resampling, normalisation and crop
(`modelgrid`: a case onto the model grid), co-registration, brain extraction and the raw-scan
path (`rawprep`). Imports `lckd.base` and `lckd.io`."""
