"""A long loop is never silent: where the tqdm bar is off (`train.progress=False`, or a log file
instead of a terminal), a log line at least every `INTERVAL` seconds says how far it got."""

import time
from typing import Callable

from absl import logging

INTERVAL = 10.0  # seconds between two lines at most (the next item after it, exactly)


class Heartbeat:
  """Logs '`desc`: `verb` N/M images' once `interval` seconds have passed since the start or the
  last line; silent where disabled (the bar shows progress, or another host logs it)."""

  def __init__(self, desc: str, total: int, verb: str, enabled: bool = True,
               interval: float | None = None, clock: Callable[[], float] = time.monotonic):
    self.desc, self.total, self.verb, self.enabled = desc, total, verb, enabled
    self.interval, self.clock = INTERVAL if interval is None else interval, clock
    self.started = self.last = clock()

  def update(self, done: int) -> None:
    """`done` of the `total` images are through."""
    if not self.enabled:
      return
    now = self.clock()
    if now - self.last >= self.interval:
      logging.info('%s: %s %d/%d images (%.0f s)', self.desc, self.verb, done, self.total,
                   now - self.started)
      self.last = now
