"""The `config.detectors.scattering_xgb` section: the scattering features and the XGBoost fit of
nexjax.detectors.scattering_xgb, which reads it. None of its keys is part of a run: the detector
is fitted after it. Light imports only: the config files build the section from it."""

from nexjax import sections


def check(values, found: sections.Problems) -> None:
  """The settings the transform or XGBoost cannot use."""
  found.check(values.J >= 1, 'J', f'{values.J}: needs at least one scale')
  found.check(values.L >= 1, 'L', f'{values.L}: needs at least one angle')
  found.check(values.order in (1, 2), 'order', f'{values.order} must be 1 or 2')
  found.check(len(values.pool_grid) > 0 and all(g >= 1 for g in values.pool_grid), 'pool_grid',
              f'{tuple(values.pool_grid)}: list positive cell counts, e.g. (1, 4)')
  found.check(values.eps > 0 or not values.log, 'eps', f'{values.eps} must be > 0 with log=True')
  found.check(values.n_estimators >= 1, 'n_estimators', f'{values.n_estimators} must be >= 1')
  found.check(0 < values.subsample <= 1, 'subsample', f'{values.subsample} must be in (0, 1]')


SECTION = sections.Section('detectors.scattering_xgb', dict(
    J=sections.outside(3, 'scales: coefficient maps are 2^J times smaller than the image'),
    L=sections.outside(8, "angles (kymatio's filters are tuned for 8)"),
    order=sections.outside(2, 'of the scattering transform: 1 or 2'),
    pool_grid=sections.outside((1, 4), 'g x g mean cells per map, concatenated'),
    pool_max=sections.outside(True, "and each map's maximum (small defects vanish in the means)"),
    log=sections.outside(True, 'features log(eps + x)'),
    eps=sections.outside(1e-6, 'of the log'),
    n_estimators=sections.outside(1000, 'boosting rounds at most; early stopping picks fewer'),
    max_depth=sections.outside(4, 'of each tree'),
    learning_rate=sections.outside(0.05, "XGBoost's eta: each round's shrinkage"),
    early_stopping_rounds=sections.outside(
        50, "rounds without a better validation log loss before stopping; 0: never stop early"),
    subsample=sections.outside(0.8, 'rows per tree'),
    colsample_bytree=sections.outside(0.5, 'features per tree'),
    min_child_weight=sections.outside(1.0, "XGBoost's: least hessian sum in a leaf"),
    max_bin=sections.outside(64, "bins per feature (XGBoost's 256 made rounds 7x slower here)"),
    nthread=sections.outside(
        2, 'fixed: fits repeat across machines (4 oversubscribed 2 cores)'),
    cache_dir=sections.outside('', "where feature files are kept ('' -> not cached)"),
), check)
