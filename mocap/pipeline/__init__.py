"""Video to per-person motion: decoding, detection, the run and batch commands."""
