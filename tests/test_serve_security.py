"""The server's security rules (issue 27, rows 1-4, 11, 12 and its "also seen"): cross-site
requests, the Host header, bounded bodies, malformed labels, a port in use, client disconnects,
weak tokens and a stale checkpoint. Through Starlette's TestClient and raw ASGI calls."""

import asyncio
import csv
import dataclasses
import io
import json
import logging
import os
import re
import shutil
import socket
import threading
import time
import types
import warnings

import httpx
import numpy as np
import PIL.EpsImagePlugin
import PIL.Image
import pytest

pytest.importorskip('starlette', reason='the serve extra is not installed')
pytest.importorskip('multipart', reason='the serve extra is not installed')
with warnings.catch_warnings():  # Starlette 1.10 suggests httpx2, which is not needed here
  warnings.simplefilter('ignore')
  from starlette.testclient import TestClient  # pylint: disable=g-import-not-at-top
from starlette.datastructures import Headers  # pylint: disable=g-import-not-at-top

from configs import finetune  # pylint: disable=g-import-not-at-top
from nexjax import config as config_lib  # pylint: disable=g-import-not-at-top
from nexjax import errors  # pylint: disable=g-import-not-at-top
from nexjax import serving  # pylint: disable=g-import-not-at-top
from nexjax.modes import serve as serve_mode  # pylint: disable=g-import-not-at-top
from nexjax.serving import app as app_lib  # pylint: disable=g-import-not-at-top
from nexjax.serving import security  # pylint: disable=g-import-not-at-top
from nexjax.serving import served as runtime_lib  # pylint: disable=g-import-not-at-top
from nexjax.serving import uploads  # pylint: disable=g-import-not-at-top
import serve_helpers  # pylint: disable=g-import-not-at-top

BASE_URL = 'http://127.0.0.1:8080'  # the default serve.host and port
EVIL = 'http://evil.example'
TOKEN = 'a-test-token-of-24-chars'


@pytest.fixture(scope='module')
def served(tmp_path_factory, make_kaggle_folder, compile_cache):
  """(config, workdir, runtime): one trained workdir and its loaded runtime."""
  del compile_cache
  root = tmp_path_factory.mktemp('serve_security')
  config, workdir, _ = serve_helpers.train_workdir(root, make_kaggle_folder)
  return config, workdir, runtime_lib.JaxRuntime(config, workdir, max_batch=4)


def service(served, token: str = '', **changes):
  config, _, runtime = served
  settings = config.serve.copy_and_resolve_references()
  settings.update(dict(max_upload_mb=0.5, **changes))
  return app_lib.Service(runtime, settings, token)


def image_parts(seed: int = 0):
  pixels = np.random.default_rng(seed).integers(0, 256, (96, 96), dtype=np.uint8)
  return [('files', ('a.png', serve_helpers.encoded(pixels), 'image/png'))]


def labels_csv(served) -> list:
  path = served[1] / 'review' / 'labels.csv'
  if not path.is_file():
    return []
  with open(path, newline='') as f:
    return list(csv.reader(f))


def test_cross_site_posts_are_refused_whatever_the_token(served):
  server = service(served)
  with TestClient(server.app(), base_url=BASE_URL) as c:
    page = c.get('/review')
    assert f'<meta name="csrf-token" content="{server.csrf}">' in page.text
    assert page.headers['x-frame-options'] == 'DENY'
    item_id = c.post('/predict', files=image_parts()).json()['results'][0]['review_id']
    assert re.fullmatch('r[0-9a-f]{16}', item_id)  # not r1, r2, ...
    before = labels_csv(served)
    label = json.dumps({'id': item_id, 'label': 'good'})
    as_json = {'content-type': 'application/json', 'x-csrf-token': server.csrf}
    refused = [
        ({**as_json, 'origin': EVIL}, 403, "Origin 'http://evil.example' is not this server"),
        ({**as_json, 'origin': 'null'}, 403, 'cross-site request refused'),
        ({**as_json, 'sec-fetch-site': 'cross-site'}, 403, 'Sec-Fetch-Site: cross-site'),
        ({**as_json, 'sec-fetch-site': 'same-site'}, 403, 'Sec-Fetch-Site: same-site'),
        ({'content-type': 'text/plain', 'x-csrf-token': server.csrf}, 415, 'application/json'),
        ({'content-type': 'application/json'}, 403, 'missing or wrong X-CSRF-Token'),
        ({'content-type': 'application/json', 'x-csrf-token': 'guess'}, 403, 'X-CSRF-Token')]
    for headers, status, message in refused:
      response = c.post('/review/label', content=label, headers=headers)
      assert response.status_code == status and message in response.json()['error'], headers
    assert labels_csv(served) == before
    for headers in ({'origin': EVIL}, {'sec-fetch-site': 'cross-site'}):
      response = c.post('/predict', files=image_parts(1), headers=headers)
      assert response.status_code == 403, response.text
    assert len(c.get('/review/items').json()['items']) == 1  # no prediction recorded
    # Scripts (no Origin) and the page itself (same origin) still work.
    assert c.post('/predict', files=image_parts(2)).status_code == 200
    assert c.post('/predict', files=image_parts(3), headers={'origin': BASE_URL}).status_code \
        == 200
    response = c.post('/review/label', content=label, headers={
        **as_json, 'origin': BASE_URL, 'sec-fetch-site': 'same-origin'})
    assert response.status_code == 200 and response.json()['label'] == 'good'
  assert service(served).csrf != server.csrf
  with TestClient(service(served, TOKEN).app(), base_url=BASE_URL) as c:
    bearer = {'authorization': f'Bearer {TOKEN}', 'content-type': 'application/json'}
    response = c.post('/review/label', content=label, headers={**bearer, 'origin': EVIL})
    assert response.status_code == 403  # the token does not make another site's page trusted
    assert c.post('/review/label', content=label, headers=bearer).status_code == 404  # new process


@pytest.mark.parametrize('bound, host, ok', [
    ('127.0.0.1', '127.0.0.1:8080', True), ('127.0.0.1', 'localhost:8080', True),
    ('127.0.0.1', '[::1]:8080', True), ('127.0.0.1', 'LOCALHOST:8080', True),
    ('127.0.0.1', 'evil.example:8080', False), ('127.0.0.1', 'evil.example', False),
    ('127.0.0.1', '127.0.0.1:8081', False), ('127.0.0.1', '127.0.0.1', False),
    ('127.0.0.1', '', False), ('::1', '[::1]:8080', True),
    ('10.1.2.3', '10.1.2.3:8080', True), ('10.1.2.3', 'localhost:8080', False),
    ('inspect.fab', 'inspect.fab:8080', True), ('inspect.fab', 'evil.example:8080', False),
    ('0.0.0.0', '10.9.8.7:8080', True), ('0.0.0.0', '[fe80::1]:8080', True),
    ('0.0.0.0', 'localhost:8080', True), ('0.0.0.0', 'rebound.evil.example:8080', False)])
def test_host_header_must_name_the_bound_address(bound, host, ok):
  rules = security.Rules(bound, 8080, TOKEN, 'csrf', 1000)
  headers = Headers(raw=[(b'host', host.encode())] if host else [])
  if ok:
    rules.check_host(headers)
  else:
    with pytest.raises(security.Refused, match='--config.serve.host=NAME'):
      rules.check_host(headers)


def test_dns_rebinding_reads_nothing(served):
  with TestClient(service(served).app(), base_url='http://evil.example:8080') as c:
    for path in ('/health', '/review', '/review/items', '/static/review.js', '/no/such'):
      response = c.get(path)
      assert response.status_code == 400, path
      assert "Host header 'evil.example:8080' is not this server's address" in \
          response.json()['error'] and 'workdir' not in response.text


async def call(app, method: str, path: str, headers: dict, chunks):
  """(status, JSON body, chunks read) of one raw ASGI request whose body is `chunks`, streamed
  without a Content-Length; a disconnect when they run out."""
  chunks, read, sent = iter(chunks), [0], []

  async def receive():
    chunk = next(chunks, None)
    if chunk is None:
      return {'type': 'http.disconnect'}
    read[0] += 1
    return {'type': 'http.request', 'body': chunk, 'more_body': True}

  async def send(message):
    sent.append(message)
  scope = {'type': 'http', 'method': method, 'path': path, 'raw_path': path.encode(),
           'query_string': b'', 'scheme': 'http', 'server': ('127.0.0.1', 8080),
           'client': ('127.0.0.1', 5000), 'http_version': '1.1', 'root_path': '',
           'headers': [(b'host', b'127.0.0.1:8080'), *((k.encode(), v.encode())
                                                      for k, v in headers.items())]}
  await app(scope, receive, send)
  body = b''.join(m.get('body', b'') for m in sent if m['type'] == 'http.response.body')
  return sent[0]['status'], json.loads(body) if body else None, read[0]


def test_every_body_is_bounded_as_it_streams(served):
  server = service(served)
  app = server.app()
  huge = (b'x' * 2**16 for _ in range(6400))  # 400 MB, never sent whole
  multipart = {'content-type': 'multipart/form-data; boundary=zz'}
  status, body, read = asyncio.run(call(app, 'POST', '/predict', multipart, huge))
  assert status == 413 and 'above serve.max_upload_mb (524288 bytes)' in body['error']
  assert read <= 9
  as_json = {'content-type': 'application/json', 'x-csrf-token': server.csrf}
  status, body, read = asyncio.run(call(app, 'POST', '/review/label', as_json, huge))
  assert status == 413 and 'above the JSON body limit (16384 bytes)' in body['error']
  assert read == 1
  with TestClient(app, base_url=BASE_URL) as c:
    response = c.post('/review/label', content=b' ' * 20_000, headers=as_json)
    assert response.status_code == 413 and 'request of 20000 bytes' in response.json()['error']
    response = c.request('GET', '/health', content=b'x' * 600_000)
    assert response.status_code == 413


@pytest.mark.parametrize('body, message', [
    ('["good"]', 'body is a JSON list'), ('{"x": 1}', "keys ['x']"), ('"f0"', 'JSON str'),
    ('[' * 10_000, 'nested too deeply'), ('{"id": ' + '[' * 5000 + ']' * 5000 + '}',
                                          'nested too deeply'),
    ('{"id": "f0", "label": ["good"]}', 'label ["good"]: use'),
    ('{"id": "f0", "label": {"x": 1}}', 'label {"x": 1}'), ('{"id": "f0", "label": 1}', 'label 1'),
    ('{"id": ["f0"], "label": "good"}', 'id is a JSON list'), ('{"id": "f0"}', "keys ['id']"),
    ('nope', 'not JSON'), (b'\xff\xfe', 'not JSON'), ('', 'not JSON')])
def test_malformed_labels_are_one_line_400s(served, body, message):
  server = service(served)
  with TestClient(server.app(), base_url=BASE_URL) as c:
    response = c.post('/review/label', content=body, headers={
        'content-type': 'application/json', 'x-csrf-token': server.csrf})
    assert response.status_code == 400, response.text
    error = response.json()['error']
    assert message in error and '\n' not in error and len(error) < 200
    response = c.post('/review/label', json={'id': 'r0000', 'label': 'good'},
                      headers={'x-csrf-token': server.csrf})
    assert response.status_code == 404 and response.json()['error'] == "no review item 'r0000'."


def test_a_client_that_disconnects_is_one_log_line(served, caplog):
  caplog.set_level(logging.INFO)
  app = service(served).app()
  headers = {'content-type': 'multipart/form-data; boundary=zz'}
  for _ in range(3):
    status, _, _ = asyncio.run(call(app, 'POST', '/predict', headers, [b'--zz\r\n']))
    assert status == 499
  lines = [r for r in caplog.records if 'disconnected' in r.getMessage()]
  assert len(lines) == 3 and not any(r.exc_info for r in caplog.records)
  assert lines[0].getMessage() == '127.0.0.1 disconnected during POST /predict; request dropped.'


def test_a_port_in_use_is_one_line_before_anything_loads():
  with socket.socket() as holder:
    holder.bind(('127.0.0.1', 0))
    holder.listen()
    port = holder.getsockname()[1]
    with pytest.raises(errors.ConfigError) as raised:
      serve_mode.bind('127.0.0.1', port)
  assert str(raised.value).startswith(f'cannot listen on 127.0.0.1:{port} (Address already in '
                                      'use)') and '--config.serve.port=PORT' in str(raised.value)
  with serve_mode.bind('127.0.0.1', 0) as listener:  # held from the start: no one else gets it
    with socket.socket() as other, pytest.raises(OSError):
      other.bind(('127.0.0.1', listener.getsockname()[1]))


@pytest.mark.parametrize('token', [' ' * 16, ' ' * 20 + 'abc', 'a b c d e f g h i j k l m n o'])
def test_a_token_needs_16_non_space_characters(token, monkeypatch):
  monkeypatch.delenv(serving.TOKEN_ENV, raising=False)
  config = finetune.get_config('smoke')
  config.serve.token = token
  with pytest.raises(errors.ConfigError, match=r'the serve token \(serve.token or '
                     r'\$NEXJAX_SERVE_TOKEN\) has \d+ non-space characters; use at least 16'):
    config_lib.check(config, 'serve')
  config.serve.token = 'x' * 16
  config_lib.check(config, 'serve')


def test_a_deleted_or_superseded_checkpoint_is_reported(served, tmp_path, caplog):
  _, workdir, runtime = served
  copy = tmp_path / 'workdir'
  shutil.copytree(workdir / 'checkpoints', copy / 'checkpoints')
  step = runtime.info.checkpoint_step
  fake = types.SimpleNamespace(info=dataclasses.replace(
      runtime.info, workdir=str(copy), checkpoint_choice='latest'))
  server = app_lib.Service(fake, runtime.config.serve, '')
  server.checkpoint.interval_s = 0
  caplog.set_level(logging.INFO)
  with TestClient(server.app(), base_url=BASE_URL) as c:
    assert c.get('/health').json()['checkpoint'] == {'step': step, 'stale': False}
    shutil.copytree(copy / 'checkpoints' / str(step), copy / 'checkpoints' / str(step + 100))
    state = c.get('/health').json()['checkpoint']
    assert state == {'step': step, 'stale': True, 'reason': (
        f"evaluate.checkpoint='latest' now names step {step + 100}, not the served {step}; "
        'restart the server to serve it.')}
    shutil.rmtree(copy / 'checkpoints' / str(step))
    state = c.get('/health').json()['checkpoint']
    assert state['stale'] and state['reason'].startswith(f'step {step} was deleted from {copy}')
  stale = [r for r in caplog.records if 'checkpoint is stale' in r.getMessage()]
  assert len(stale) == 1  # logged once


def fake_service(workdir) -> app_lib.Service:
  """A server over a runtime that scores every image 0.7 (8 px grey): nothing trained."""
  info = runtime_lib.Info(model='fake', workdir=str(workdir), checkpoint_step=0,
                          threshold=0.5, image_size=8, tta=False)
  runtime = types.SimpleNamespace(info=info, has_maps=False, image_size=8, channels=1,
                                  high_bit_scaling='bit_depth',
                                  scores=lambda images: np.full(len(images), 0.7))
  return app_lib.Service(runtime, finetune.get_config('smoke').serve, '')


def test_a_label_over_an_unreadable_labels_csv_is_a_409_that_keeps_the_file(tmp_path):
  """labels.csv is read afresh for each label: an operator's edit that made it unreadable is
  reported, not a 500 and not overwritten."""
  server = fake_service(tmp_path)
  image = tmp_path / 'a.png'
  image.write_bytes(serve_helpers.encoded(np.zeros((8, 8), np.uint8)))
  server.review.add_folder_image('a.png', image, np.zeros((8, 8, 1), np.uint8), 0.7)
  table = server.review.labels_path
  table.parent.mkdir()
  table.write_text(f'file,label\n{image},1\n{image},0\n')
  with TestClient(server.app(), base_url=BASE_URL) as c:
    response = c.post('/review/label', json={'id': 'f0', 'label': 'good'},
                      headers={'x-csrf-token': server.csrf})
  assert response.status_code == 409, response.text
  assert response.json()['error'].startswith(f'label not saved: {table}: file ')
  assert table.read_text() == f'file,label\n{image},1\n{image},0\n'


def test_an_upload_of_another_format_never_reaches_its_decoder(monkeypatch):
  """Any format Pillow knew was decoded: an EPS upload went to Ghostscript (where installed)."""
  ran = []
  monkeypatch.setattr(PIL.EpsImagePlugin, 'Ghostscript', lambda *a, **k: ran.append(a))
  for fmt in ('EPS', 'DDS'):
    buffer = io.BytesIO()
    PIL.Image.new('RGB', (16, 16)).save(buffer, fmt)
    with pytest.raises(uploads.BadUpload, match=r'^x.png: not an image Pillow can read '
                                                r'\(UnidentifiedImageError: .* not PNG, JPEG, BMP'):
      uploads.decode(buffer.getvalue(), 'x.png', max_pixels=10**6, image_size=8, channels=3,
                     high_bit_scaling='bit_depth')
  assert not ran


def test_a_files_part_without_a_filename_is_refused_not_left_out(tmp_path):
  """A `files` part without a filename (curl -F files=<PATH) is a text field: it was dropped, so
  the results no longer matched the parts in order."""
  image = serve_helpers.encoded(np.zeros((8, 8), np.uint8))
  body = (b'--zz\r\nContent-Disposition: form-data; name="files"\r\n\r\n' + image +
          b'\r\n--zz\r\nContent-Disposition: form-data; name="files"; filename="b.png"\r\n\r\n' +
          image + b'\r\n--zz--\r\n')
  with TestClient(fake_service(tmp_path).app(), base_url=BASE_URL) as c:
    response = c.post('/predict', content=body,
                      headers={'content-type': 'multipart/form-data; boundary=zz'})
    assert response.status_code == 400, response.text
    assert response.json()['error'].startswith("part 1 of 2 named 'files' has no filename")
    assert c.get('/review/items').json()['items'] == []


def test_a_max_pixels_above_pillows_own_bound_is_honoured():
  """Pillow's warning above its 89M-pixel bound was made an error: serve.max_pixels=100M
  refused 95M pixels (saying 'the limit is serve.max_pixels=100000000')."""
  with pytest.warns(PIL.Image.DecompressionBombWarning):  # Pillow's, left a warning
    uploads.check_header(serve_helpers.png_header(10_000, 9_500), 'big.png', 100_000_000)
  with pytest.raises(uploads.BadUpload, match=r'^big.png: 10000 x 10001 = 100010000 pixels, '
                                              r'above serve.max_pixels=100000000\.$'), \
      pytest.warns(PIL.Image.DecompressionBombWarning):
    uploads.check_header(serve_helpers.png_header(10_000, 10_001), 'big.png', 100_000_000)
  with pytest.raises(uploads.BadUpload, match='big.png: too many pixels'):
    uploads.check_header(serve_helpers.png_header(20_000, 20_000), 'big.png', 100_000_000)


def test_a_review_folder_file_whose_name_is_not_utf8_is_left_out(tmp_path, caplog):
  """One such name (Latin-1 from a Windows share) made every GET /review/items a 500."""
  folder = tmp_path / 'review'
  folder.mkdir()
  image = serve_helpers.encoded(np.zeros((8, 8), np.uint8))
  (folder / 'ok.png').write_bytes(image)
  (folder / os.fsdecode(b'd\xe9faut.png')).write_bytes(image)
  server = fake_service(tmp_path / 'w')
  caplog.set_level(logging.WARNING)
  server.review_files = app_lib.review_files(str(folder), server.runtime, progress=False)
  assert "d\\udce9faut.png is left out: its name is not UTF-8 text; rename it" in caplog.text
  with TestClient(server.app(), base_url=BASE_URL) as c:
    response = c.get('/review/items')
    assert response.status_code == 200
    assert [item['file'] for item in response.json()['items']] == ['ok.png']


def test_concurrent_requests_decode_a_few_images_at_a_time(tmp_path):
  """Each request's images went to Starlette's 40 threads: 40 small PNGs of serve.max_pixels,
  about 1 GB each while decoded, held at once."""
  server = fake_service(tmp_path)
  active, peak, lock = [0], [0], threading.Lock()

  def slow_decode(name, data):
    with lock:
      active[0] += 1
      peak[0] = max(peak[0], active[0])
    time.sleep(0.2)
    with lock:
      active[0] -= 1
    raise uploads.BadUpload(400, f'{name}: stopped here.')
  server.decode = slow_decode

  async def requests():
    transport = httpx.ASGITransport(app=server.app())
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
      return await asyncio.gather(*(client.post('/predict', files=image_parts(i))
                                    for i in range(12)))
  assert [r.status_code for r in asyncio.run(requests())] == [400] * 12
  assert peak[0] == app_lib.DECODERS
