"""The HTTP service: predictions for uploaded images and the review page, from a workdir alone.

    POST /predict[?overlay=1]   multipart/form-data, one or more parts named `files` ->
                                {"threshold", "checkpoint_step", "score", "results": [{"file",
                                "p_defect", "defect"[, "overlay_png_base64"]}]}; "score" says
                                what p_defect holds: "P(defect)", or a saved detector's score
                                where training chose one for the line (DIR/line.json)
    GET  /health                the model, checkpoint step and threshold served, and whether
                                that checkpoint is still the one the workdir names
    GET  /review                the review page (static HTML and JS: no data in them but the
                                process's CSRF secret, which no other site can read)
    GET  /review/items          the scored items; GET /review/overlay/ID their Grad-CAM overlays
    POST /review/label          {"id": ID, "label": "good" | "defect" | null}

Security (`security`): every request's Host header names the bound address (DNS rebinding);
POSTs from another origin are refused, and /review/label takes JSON with the process's CSRF
secret, which the page receives in its HTML; bodies are bounded as they stream (413). With a
token (required unless bound to a loopback address) every route but the page's HTML and JS needs
`Authorization: Bearer TOKEN`, compared in constant time. Images are bounded by their header's
pixel count before decoding (400), and DECODERS at most are decoded at once (the others wait);
no request names a file: static files are a fixed list
held in memory, review items opaque ids.
"""

import asyncio
import base64
import contextlib
import importlib.resources
import json
import secrets

from absl import logging
import anyio
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from nexjax import errors
from nexjax.data import folder as folder_lib
from nexjax.serving import batcher as batcher_lib
from nexjax.serving import review as review_lib
from nexjax.serving import security
from nexjax.serving import served as runtime_lib
from nexjax.serving import uploads

MAX_FILES = 64  # per request
# Uploads decoded at once, across requests: one at serve.max_pixels (40M) holds about 1 GB while
# it is decoded and resized, and Starlette's thread pool would run 40 (a few small PNGs each).
DECODERS = 4
STATIC = {'review.html': 'text/html; charset=utf-8', 'review.js': 'text/javascript',
          'review.css': 'text/css'}
CSRF_SLOT = b'{{csrf}}'  # in review.html: filled with the process's CSRF secret
NO_FRAMING = {'X-Content-Type-Options': 'nosniff', 'X-Frame-Options': 'DENY',
              'Content-Security-Policy': "frame-ancestors 'none'"}
LABEL_SHAPE = '{"id": ITEM_ID, "label": "good" | "defect" | null}'


def static_files() -> dict[str, bytes]:
  """The page's files, read once from the package: nothing else can ever be served."""
  folder = importlib.resources.files('nexjax.serving') / 'static'
  return {name: (folder / name).read_bytes() for name in STATIC}


def label_request(body: bytes) -> tuple[str, str | None]:
  """(item id, label) of a /review/label body, or Refused(400) with one line."""
  value = security.json_object(body, LABEL_SHAPE)
  if sorted(value) != ['id', 'label']:
    raise security.Refused(400, f'keys {sorted(value)[:4]}: send {LABEL_SHAPE}.')
  item_id, label = value['id'], value['label']
  if not isinstance(item_id, str):
    raise security.Refused(400, f'id is a JSON {type(item_id).__name__}: send {LABEL_SHAPE}.')
  if label is not None and (not isinstance(label, str) or label not in review_lib.LABELS):
    raise security.Refused(400, f'label {json.dumps(label)[:40]}: use "good", "defect" or null.')
  return item_id, label


def check_files(values) -> None:
  """Every `files` part is a file: a text field (a part without a filename, as `curl -F
  files=<PATH` sends) would be left out, and the results would no longer match the parts."""
  fields = [i for i, value in enumerate(values, 1) if isinstance(value, str)]
  if fields:
    raise uploads.BadUpload(400, f"part {fields[0]} of {len(values)} named 'files' has no "
                                 'filename, so it is not read as a file: send every image as a '
                                 'file (curl -F files=@PATH).')


async def uploaded_files(request: Request, limit: int) -> list[tuple[str, bytes]]:
  """(shown name, bytes) of the `files` parts of a bounded multipart body."""
  if not request.headers.get('content-type', '').startswith('multipart/form-data'):
    raise uploads.BadUpload(400, "send multipart/form-data with the images as parts named "
                                 "'files'.")
  body = await request.body()  # bounded as it streams (security.Guard)

  async def replay():
    return {'type': 'http.request', 'body': body, 'more_body': False}

  try:
    async with Request(request.scope, replay).form(max_files=MAX_FILES, max_fields=16,
                                                   max_part_size=limit) as form:
      values = form.getlist('files')
      check_files(values)
      parts = [(uploads.safe_name(p.filename), await p.read()) for p in values]
  except (MultiPartException, HTTPException) as e:  # Starlette raises the latter in an app
    detail = getattr(e, 'message', None) or getattr(e, 'detail', '')
    raise uploads.BadUpload(400, f'malformed multipart body ({detail}).') from None
  if not parts:
    raise uploads.BadUpload(400, "no images: send them as multipart parts named 'files'.")
  return parts


class Service:
  """The routes over one runtime, its batcher and the review store."""

  def __init__(self, runtime, settings, token: str, review_files=()):
    self.runtime, self.settings = runtime, settings
    self.batcher = batcher_lib.Batcher(runtime, settings.max_batch,
                                       settings.batch_window_ms / 1000)
    self.review = review_lib.Review(runtime.info.workdir, runtime.info.threshold)
    self.review_files = review_files  # (shown name, path, uint8 image) scored at start-up
    self.limit = int(settings.max_upload_mb * 2**20)
    self.decoders = anyio.CapacityLimiter(DECODERS)
    self.csrf = secrets.token_urlsafe(32)  # per process: the review page's proof of origin
    self.rules = security.Rules(settings.host, settings.port, token, self.csrf, self.limit)
    self.static = static_files()
    self.static['review.html'] = self.static['review.html'].replace(CSRF_SLOT, self.csrf.encode())
    self.checkpoint = runtime_lib.CheckpointWatch(runtime.info)

  @contextlib.asynccontextmanager
  async def lifespan(self, _):
    self.batcher.start()
    results = await asyncio.gather(*(self.batcher.submit(image)
                                     for _, _, image in self.review_files))
    for (name, path, image), result in zip(self.review_files, results):
      self.review.add_folder_image(name, path, image, result.p_defect)
    if self.review_files:
      logging.info('Scored %d review images.', len(results))
    yield
    await self.batcher.stop()

  def app(self) -> security.Guard:
    routes = [Route('/', lambda _: RedirectResponse('/review')),
              Route('/review', lambda _: self.static_file('review.html')),
              Route('/static/{name}', lambda r: self.static_file(r.path_params['name'])),
              Route('/health', self.guard(self.health)),
              Route('/predict', self.guard(self.predict), methods=['POST']),
              Route('/review/items', self.guard(self.items)),
              Route('/review/overlay/{item_id}', self.guard(self.overlay)),
              Route('/review/label', self.guard(self.label), methods=['POST'])]
    return security.Guard(Starlette(routes=routes, lifespan=self.lifespan), self.rules)

  def guard(self, handler):
    async def guarded(request: Request):
      if not self.rules.authorized(request.headers):
        return security.error(401, 'missing or wrong token: send Authorization: Bearer TOKEN.')
      try:
        return await handler(request)
      except security.Refused as e:
        return security.error(e.status, str(e))
      except ClientDisconnect:
        client = request.client.host if request.client else 'a client'
        logging.warning('%s disconnected during %s %s; request dropped.', client,
                        request.method, request.url.path)
        return Response(status_code=499)
    return guarded

  def static_file(self, name: str) -> Response:
    if name not in self.static:
      return security.error(404, 'not found.')
    return Response(self.static[name], media_type=STATIC[name],
                    headers={**NO_FRAMING, 'Cache-Control': 'no-store'})

  async def health(self, _) -> JSONResponse:
    info = self.runtime.info
    return JSONResponse({'status': 'ok', 'model': info.model, 'workdir': info.workdir,
                         'checkpoint_step': info.checkpoint_step, 'threshold': info.threshold,
                         'image_size': info.image_size, 'tta': info.tta, 'score': info.score,
                         'batches': self.batcher.batches,
                         'checkpoint': await run_in_threadpool(self.checkpoint.state)})

  async def predict(self, request: Request) -> JSONResponse:
    with_overlay = request.query_params.get('overlay', '0') not in ('0', '', 'false')
    if with_overlay and not self.runtime.has_maps:
      raise security.Refused(400, f'no overlays from {self.runtime.info.model}: serve the '
                                  'classifier with --config.serve.runtime=jax for Grad-CAM '
                                  'overlays.')
    parts = await uploaded_files(request, self.limit)
    images = [await anyio.to_thread.run_sync(self.decode, name, data, limiter=self.decoders)
              for name, data in parts]
    results = await asyncio.gather(*(self.batcher.submit(image, with_overlay)
                                     for image in images))
    rows = []
    for (name, _), image, result in zip(parts, images, results):
      item = self.review.add_request_image(name, image, result.p_defect)
      row = {'file': name, 'p_defect': result.p_defect,
             'defect': result.p_defect >= self.runtime.info.threshold, 'review_id': item.id}
      if result.map is not None:
        item.overlay = review_lib.overlay_png(image, result.map)
        row['overlay_png_base64'] = base64.b64encode(item.overlay).decode('ascii')
      rows.append(row)
    return JSONResponse({'threshold': self.runtime.info.threshold,
                         'checkpoint_step': self.runtime.info.checkpoint_step,
                         'score': self.runtime.info.score, 'results': rows})

  def decode(self, name: str, data: bytes):
    return uploads.decode(data, name, max_pixels=self.settings.max_pixels,
                          image_size=self.runtime.image_size, channels=self.runtime.channels,
                          high_bit_scaling=self.runtime.high_bit_scaling)

  async def items(self, _) -> JSONResponse:
    return JSONResponse({'threshold': self.runtime.info.threshold,
                         'score': self.runtime.info.score,
                         'labels_csv': str(self.review.labels_path),
                         'items': self.review.items()})

  async def overlay(self, request: Request) -> Response:
    item = self.review.get(request.path_params['item_id'])
    if item is None:
      return security.error(404, 'no such review item.')
    if item.overlay is None and not self.runtime.has_maps:
      return security.error(404, f'no overlay: {self.runtime.info.model} has no maps.')
    if item.overlay is None:
      result = await self.batcher.submit(item.image, with_map=True)
      item.overlay = review_lib.overlay_png(item.image, result.map)
    return Response(item.overlay, media_type='image/png')

  async def label(self, request: Request) -> JSONResponse:
    item_id, label = label_request(await request.body())
    item = self.review.get(item_id)
    if item is None:
      return security.error(404, f'no review item {item_id[:40]!r}.')
    try:
      return JSONResponse(self.review.set_label(item, label))
    except errors.DataError as e:  # labels.csv edited into a file that cannot be read
      raise security.Refused(409, f'label not saved: {e}') from None


def review_files(folder: str, runtime, progress: bool) -> list:
  """(name in the folder, path, uint8 image) of `folder` (`serve.review_dir`), decoded like
  predict does."""
  if not folder:
    return []
  files = text_named(folder_lib.list_inputs(folder), folder)
  images, files = folder_lib.decode_images(
      files, image_size=runtime.image_size, channels=runtime.channels,
      high_bit_scaling=runtime.high_bit_scaling, progress=progress)
  names = folder_lib.relative_names(files, folder)
  return list(zip(names, files, images))


def text_named(files: list, folder: str) -> list:
  """The `files` whose paths are UTF-8 text: the page's JSON and labels.csv hold them as text
  (one other name made every /review/items a 500). The others are logged, to be renamed."""
  kept, other = [], []
  for f in files:
    (kept if is_text(str(f)) else other).append(f)
  for f in other:
    logging.warning('serve.review_dir: %s is left out: its name is not UTF-8 text; rename it.',
                    str(f).encode('utf-8', 'backslashreplace').decode('utf-8'))
  if not kept:
    raise errors.DataError(f'serve.review_dir={folder}: none of its {len(files)} image files has '
                           'a UTF-8 name; rename them.')
  return kept


def is_text(name: str) -> bool:
  try:
    name.encode('utf-8')
    return True
  except UnicodeEncodeError:  # bytes that were not UTF-8, as Python holds them (surrogates)
    return False
