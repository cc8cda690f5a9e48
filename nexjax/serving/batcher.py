"""Server-side batching: concurrent requests' images scored together in one call.

The first image waits at most `window_s` for others (or until `max_batch` are queued); while a
batch runs, new images queue up, so under load every call is full and throughput approaches the
runtime's own batch figure. One worker thread runs the model, so JAX calls never overlap.
"""

import asyncio
import concurrent.futures
import dataclasses

import numpy as np


@dataclasses.dataclass
class Result:
  p_defect: float
  map: np.ndarray | None  # Grad-CAM map when asked for


class Batcher:
  """`await submit(image, with_map)` -> Result; `start()` and `stop()` on the server's loop."""

  def __init__(self, runtime, max_batch: int, window_s: float):
    self.runtime, self.max_batch, self.window_s = runtime, max_batch, window_s
    self.queue: asyncio.Queue | None = None
    self.task = None
    self.executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix='model')
    self.batches = 0

  def start(self) -> None:
    self.queue = asyncio.Queue()
    self.task = asyncio.get_running_loop().create_task(self.run())

  async def stop(self) -> None:
    self.task.cancel()
    try:
      await self.task
    except asyncio.CancelledError:
      pass
    self.executor.shutdown(wait=True)

  async def submit(self, image: np.ndarray, with_map: bool = False) -> Result:
    future = asyncio.get_running_loop().create_future()
    await self.queue.put((image, with_map, future))
    return await future

  async def collect(self) -> list:
    """The next batch: the first queued item, then whatever arrives within the window."""
    batch = [await self.queue.get()]
    deadline = asyncio.get_running_loop().time() + self.window_s
    while len(batch) < self.max_batch:
      if not self.queue.empty():
        batch.append(self.queue.get_nowait())
        continue
      remaining = deadline - asyncio.get_running_loop().time()
      if remaining <= 0:
        break
      try:
        batch.append(await asyncio.wait_for(self.queue.get(), remaining))
      except TimeoutError:
        break
    return batch

  def compute(self, images: np.ndarray, with_map: np.ndarray) -> list[Result]:
    scores = self.runtime.scores(images)
    maps = [None] * len(images)
    if with_map.any():
      chosen = np.flatnonzero(with_map)
      for i, amap in zip(chosen, self.runtime.maps(images[chosen])):
        maps[i] = amap
    return [Result(float(s), m) for s, m in zip(scores, maps)]

  async def run(self) -> None:
    loop = asyncio.get_running_loop()
    while True:
      batch = await self.collect()
      batch = [item for item in batch if not item[2].done()]  # clients that gave up
      if not batch:
        continue
      images = np.stack([image for image, _, _ in batch])
      with_map = np.array([flag for _, flag, _ in batch])
      try:
        results = await loop.run_in_executor(self.executor, self.compute, images, with_map)
      except Exception as e:  # pylint: disable=broad-except: the callers get the error
        for _, _, future in batch:
          if not future.done():
            future.set_exception(e)
        continue
      self.batches += 1
      for (_, _, future), result in zip(batch, results):
        if not future.done():
          future.set_result(result)
