"""Measures and pictures: metrics, per-defect-type figures, localization scores and overlays,
the training table and plots."""
