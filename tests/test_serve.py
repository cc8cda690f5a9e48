"""--mode=serve through Starlette's TestClient: predictions, every bad request, the token rule,
path traversal, the review labels; the extra-labels flag training reads them through."""

import asyncio
import base64
import copy
import csv
import io
import warnings

import ml_collections
import numpy as np
import PIL.Image
import pytest

pytest.importorskip('starlette', reason='the serve extra is not installed')
pytest.importorskip('multipart', reason='the serve extra is not installed')
with warnings.catch_warnings():  # Starlette 1.10 suggests httpx2, which is not needed here
  warnings.simplefilter('ignore')
  from starlette.testclient import TestClient  # pylint: disable=g-import-not-at-top

from nexjax import config as config_lib  # pylint: disable=g-import-not-at-top
from nexjax import errors  # pylint: disable=g-import-not-at-top
from nexjax import serving  # pylint: disable=g-import-not-at-top
from nexjax.data import extra_labels  # pylint: disable=g-import-not-at-top
from nexjax.data import folder as folder_lib  # pylint: disable=g-import-not-at-top
from nexjax.modes import predict  # pylint: disable=g-import-not-at-top
from nexjax.serving import app as app_lib  # pylint: disable=g-import-not-at-top
from nexjax.serving import batcher as batcher_lib  # pylint: disable=g-import-not-at-top
from nexjax.serving import served as runtime_lib  # pylint: disable=g-import-not-at-top
from nexjax.train import job as job_lib  # pylint: disable=g-import-not-at-top
from nexjax.train import scoring  # pylint: disable=g-import-not-at-top
import serve_helpers  # pylint: disable=g-import-not-at-top

TOKEN = 'a-test-token-of-24-chars'
BASE_URL = 'http://127.0.0.1:8080'  # the default serve.host and port: the Host header checked


@pytest.fixture(scope='module')
def served(tmp_path_factory, make_kaggle_folder, compile_cache):
  """(config, workdir, runtime, data folder): one trained workdir and its loaded runtime."""
  del compile_cache
  root = tmp_path_factory.mktemp('serve')
  config, workdir, data = serve_helpers.train_workdir(root, make_kaggle_folder)
  runtime = runtime_lib.JaxRuntime(config, workdir, max_batch=4)
  return config, workdir, runtime, data


def settings(config, **changes):
  serve = ml_collections.ConfigDict(config.serve.to_dict())
  serve.update(changes)
  return serve


def with_serve(config, **changes):
  """A copy of `config` with `serve` changed."""
  whole = copy.deepcopy(config)
  with whole.unlocked():
    whole.serve = settings(config, **changes)
  return whole


@pytest.fixture(scope='module')
def client(served):
  config, _, runtime, data = served
  review = [('train/good_0/good_0000.jpg', data / 'train/good_0/good_0000.jpg',
             folder_lib.decode_images([data / 'train/good_0/good_0000.jpg'],
                                      image_size=runtime.image_size, channels=runtime.channels,
                                      high_bit_scaling=runtime.high_bit_scaling)[0][0])]
  service = app_lib.Service(runtime, settings(config, max_upload_mb=0.5, max_pixels=1_000_000),
                            '', review)
  with TestClient(service.app(), base_url=BASE_URL, headers={'X-CSRF-Token': service.csrf}) as c:
    yield c


def files(*parts):
  return [('files', (name, data, 'application/octet-stream')) for name, data in parts]


def test_health_names_model_step_and_threshold(client):
  body = client.get('/health').json()
  assert body['model'].startswith('resnet10') and body['checkpoint_step'] > 0
  assert body['threshold'] == 0.3 and body['image_size'] == 96


def test_predict_matches_predict_mode_and_overlays(served, client, tmp_path):
  config, workdir, _, _ = served
  rng = np.random.default_rng(0)
  folder = tmp_path / 'in'
  folder.mkdir()
  grey = rng.integers(0, 256, (70, 90), dtype=np.uint8)
  PIL.Image.fromarray(grey).save(folder / 'a.png')
  PIL.Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(folder / 'b.jpg')
  response = client.post('/predict?overlay=1', files=files(
      ('a.png', (folder / 'a.png').read_bytes()), ('b.jpg', (folder / 'b.jpg').read_bytes()),
      ('a16.tif', serve_helpers.encoded(grey.astype(np.uint16) * 257, 'TIFF'))))
  assert response.status_code == 200, response.text
  results = response.json()['results']
  assert [r['file'] for r in results] == ['a.png', 'b.jpg', 'a16.tif']
  for r in results:
    assert 0 <= r['p_defect'] <= 1 and r['defect'] == (r['p_defect'] >= 0.3)
    overlay = PIL.Image.open(io.BytesIO(base64.b64decode(r['overlay_png_base64'])))
    assert overlay.size == (96, 96) and overlay.mode == 'RGB'
  # A 16-bit TIFF is scaled by its bit depth, like the training data: x * 257 -> x.
  assert results[2]['p_defect'] == pytest.approx(results[0]['p_defect'], abs=1e-6)
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.predict.input, config.predict.output = str(folder), str(tmp_path / 'p.csv')
  predict.predict_folder(config, workdir)
  with open(tmp_path / 'p.csv') as f:
    expected = {row['file']: float(row['p_defect']) for row in csv.DictReader(f)}
  for r in results[:2]:
    assert r['p_defect'] == pytest.approx(expected[r['file']], abs=1e-5)


@pytest.mark.parametrize('parts, status, message', [
    ([('notes.txt', b'just some text')], 400, 'notes.txt: not an image Pillow can read'),
    ([('cut.jpg', serve_helpers.encoded(np.random.default_rng(0).integers(
        0, 256, (64, 64), dtype=np.uint8), 'JPEG')[:2000])], 400, 'cut.jpg: cannot be decoded'),
    ([('bomb.png', serve_helpers.png_header(20000, 20000))], 400, 'bomb.png: too many pixels'),
    ([('big.png', serve_helpers.png_header(2000, 1000))], 400,
     'big.png: 2000 x 1000 = 2000000 pixels, above serve.max_pixels=1000000'),
    ([('../../etc/passwd', b'x')], 400, 'passwd: not an image'),
    ([('huge.png', b'\0' * 600_000)], 413, 'above serve.max_upload_mb'),
    ([(f'{i}.png', b'x') for i in range(65)], 400, 'Too many files'),
])
def test_bad_uploads_are_clear_4xx_and_the_server_keeps_serving(client, parts, status, message):
  response = client.post('/predict', files=files(*parts))
  assert response.status_code == status and message in response.json()['error'], response.text
  assert client.get('/health').status_code == 200


def test_requests_without_files_or_multipart(client):
  response = client.post('/predict', content=b'{}', headers={'content-type': 'application/json'})
  assert response.status_code == 400 and 'multipart/form-data' in response.json()['error']
  response = client.post('/predict', files=[('other', ('a.png', b'x', 'image/png'))])
  assert response.status_code == 400 and "parts named 'files'" in response.json()['error']
  response = client.post('/predict', content=b'x' * 10, headers={
      'content-type': 'multipart/form-data; boundary=zz', 'content-length': str(2**30)})
  assert response.status_code == 413


def test_no_file_outside_its_folders_can_be_read(client):
  for path in ('/static/../../etc/passwd', '/static/..%2F..%2Fetc%2Fpasswd',
               '/static/%2e%2e%2f%2e%2e%2fetc%2fpasswd', '/static/review.js/../../../etc/passwd',
               '/static/..%5c..%5cetc%5cpasswd', '/review/overlay/..%2F..%2Fetc%2Fpasswd',
               '/review/overlay/%2Fetc%2Fpasswd'):
    response = client.get(path)
    assert response.status_code == 404 and b'root:' not in response.content, path
  for item_id, status in (('../../etc/passwd', 404), ('/etc/passwd', 404), (['f0'], 400),
                          (7, 400)):
    response = client.post('/review/label', json={'id': item_id, 'label': 'good'})
    assert response.status_code == status, item_id
  assert client.get('/static/review.js').status_code == 200


def test_review_labels_round_trip_into_the_csv(served, client):
  _, workdir, _, data = served
  rng = np.random.default_rng(5)
  upload = serve_helpers.encoded(rng.integers(0, 256, (96, 96), dtype=np.uint8))
  request_id = client.post('/predict', files=files(('mine.png', upload))).json()[
      'results'][0]['review_id']
  items = {i['id']: i for i in client.get('/review/items').json()['items']}
  assert items['f0']['file'] == 'train/good_0/good_0000.jpg' and request_id in items
  assert client.get(f'/review/overlay/{request_id}').headers['content-type'] == 'image/png'
  assert client.post('/review/label', json={'id': 'f0', 'label': 'defect'}).json()['label'] == \
      'defect'
  assert client.post('/review/label', json={'id': request_id, 'label': 'good'}).status_code == 200
  with open(workdir / 'review' / 'labels.csv') as f:
    rows = {row['file']: row['label'] for row in csv.DictReader(f)}
  saved = [p for p in rows if p != str(data / 'train/good_0/good_0000.jpg')]
  assert rows[str(data / 'train/good_0/good_0000.jpg')] == '1' and len(saved) == 1
  assert rows[saved[0]] == '0' and saved[0].startswith(str(workdir / 'review' / 'images'))
  assert client.post('/review/label', json={'id': 'f0', 'label': None}).json()['label'] is None
  assert client.post('/review/label', json={'id': 'f0', 'label': 'bad'}).status_code == 400
  assert client.post('/review/label', content=b'nope',
                     headers={'content-type': 'application/json'}).status_code == 400
  with open(workdir / 'review' / 'labels.csv') as f:
    assert [row['file'] for row in csv.DictReader(f)] == saved


def test_token_rule(served, monkeypatch):
  config, _, runtime, _ = served
  with TestClient(app_lib.Service(runtime, config.serve, TOKEN).app(), base_url=BASE_URL) as c:
    assert c.get('/health').status_code == 401
    assert c.get('/health', headers={'Authorization': 'Bearer wrong'}).status_code == 401
    assert c.get('/health', headers={'Authorization': f'Bearer {TOKEN}'}).status_code == 200
    assert c.post('/predict', files=files(('a.png', b'x'))).status_code == 401
    assert c.get('/review').status_code == 200  # the page itself holds no data
  monkeypatch.delenv(serving.TOKEN_ENV, raising=False)
  with pytest.raises(errors.ConfigError, match='reachable from other machines'):
    config_lib.check(with_serve(config, host='0.0.0.0'), 'serve')
  with pytest.raises(errors.ConfigError, match='at least 16'):
    config_lib.check(with_serve(config, token='short'), 'serve')
  monkeypatch.setenv(serving.TOKEN_ENV, TOKEN)
  reachable = with_serve(config, host='0.0.0.0')
  config_lib.check(reachable, 'serve')
  assert serving.token(reachable) == TOKEN


@pytest.mark.parametrize('key, value, message', [
    ('port', 0, 'config.serve.port=0: must be a TCP port'),
    ('max_batch', 0, 'config.serve.max_batch=0'), ('max_upload_mb', -1, 'max_upload_mb'),
    ('batch_window_ms', 5000, 'batch_window_ms'), ('review_dir', '/no/such', 'not a folder')])
def test_serve_config_checks(key, value, message):
  from configs import finetune  # pylint: disable=import-outside-toplevel
  config = finetune.get_config('smoke')
  with config.unlocked():
    config.serve[key] = value
  with pytest.raises(errors.ConfigError, match=message):
    config_lib.check(config, 'serve')


class CountingRuntime:
  """Scores = mean pixel / 255; remembers each batch's size."""

  def __init__(self):
    self.calls = []

  def scores(self, images):
    self.calls.append(len(images))
    return images.reshape(len(images), -1).mean(-1) / 255

  def maps(self, images):
    return np.zeros(images.shape[:3], np.float32)


def test_batcher_groups_concurrent_requests():
  runtime = CountingRuntime()

  async def main():
    batcher = batcher_lib.Batcher(runtime, max_batch=4, window_s=0.05)
    batcher.start()
    results = await asyncio.gather(*(batcher.submit(np.full((2, 2, 1), i, np.uint8), i == 3)
                                     for i in range(10)))
    await batcher.stop()
    return results
  results = asyncio.run(main())
  assert [r.p_defect for r in results] == pytest.approx([i / 255 for i in range(10)])
  assert [r.map is not None for r in results] == [i == 3 for i in range(10)]
  assert runtime.calls == [4, 4, 2]
  assert runtime_lib.bucket_sizes(32) == [1, 2, 4, 8, 16, 32]
  assert runtime_lib.bucket_sizes(12, devices=4) == [4, 8, 12]


def test_extra_labels_join_the_training_split(served, tmp_path):
  config, workdir, _, data = served
  image = mirrored(data / 'train/bad_1/bad_0000.jpg', tmp_path / 'bad.png')
  other = mirrored(data / 'test/all_tests/test_0000.jpg', tmp_path / 'good.png')
  table = tmp_path / 'labels.csv'  # new images: the folder's own (or copies) are refused
  table.write_text(f'file,label\n{image},1\n{other},0\n')
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.data.extra_labels = str(table)
  plain = job_lib.load_data(_without_extra(config))
  joined = job_lib.load_data(config)
  n = len(plain['train'])
  assert len(joined['train']) == n + 2 and list(joined['train'].labels[n:]) == [1, 0]
  assert joined['train'].ids[n] == str(image) and len(joined['valid']) == len(plain['valid'])
  rows = np.array([n + 1, 0, n])
  np.testing.assert_array_equal(joined['train'].read(rows)[1], plain['train'].read([0])[0])
  extra = extra_labels.load(table, image_size=96, channels=1, high_bit_scaling='bit_depth',
                            cache_dir=tmp_path / 'cache')
  np.testing.assert_array_equal(joined['train'].read(rows)[[0, 2]], extra.images[[1, 0]])
  del workdir


def mirrored(source, target):
  with PIL.Image.open(source) as image:
    PIL.Image.fromarray(np.asarray(image)[:, ::-1]).save(target)
  return target


def _without_extra(config):
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.data.extra_labels = ''
  return config


@pytest.mark.parametrize('line, message', [
    ('{missing},1', 'line 3: image .* does not exist'),
    ('{good},2', "line 3: label '2' is not 0"),
    ('{broken},0', 'line 3: cannot decode'),
])
def test_extra_labels_errors_name_the_line(served, tmp_path, line, message):
  data = served[3]
  (tmp_path / 'broken.png').write_bytes(b'\x89PNG broken')
  good = data / 'train/good_0/good_0001.jpg'
  table = tmp_path / 'labels.csv'
  table.write_text('file,label\n' + f'{good},0\n' + line.format(
      missing=tmp_path / 'gone.png', good=good, broken='broken.png') + '\n')
  with pytest.raises(errors.DataError, match=f'{table}, {message}'):
    extra_labels.load(table, image_size=96, channels=1, high_bit_scaling='bit_depth',
                      cache_dir=tmp_path / 'cache')


def test_without_tta_only_the_plain_view_is_computed(served):
  config, workdir, runtime, _ = served
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.predict.tta = False
  plain = runtime_lib.JaxRuntime(config, workdir, max_batch=4)
  images = np.random.default_rng(3).integers(0, 256, (3, 96, 96, 1), dtype=np.uint8)
  scorer = runtime.scorer
  views = scoring.predict_views(scorer.tta_fn, scorer.variables, images, 4, 0, scorer.topo,
                                'test', progress=False)
  assert views.shape[0] == 8 and not plain.info.tta
  np.testing.assert_allclose(plain.scores(images), views[0][:, 1], atol=1e-6)
