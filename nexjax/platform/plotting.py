"""pyplot for nexjax's figures, which are only ever written to files: the non-interactive Agg
backend (no display needed, none opened) is chosen here, once, for every module that draws."""

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402,F401  pylint: disable=g-import-not-at-top,unused-import
