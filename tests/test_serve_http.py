"""--mode=serve end to end: `launch.py` in a subprocess on a free 127.0.0.1 port, real HTTP
requests, raw request lines, and the review page in a real browser (Debian's chromium), also as
seen from another site's page."""

import base64
import csv
import functools
import http.server
import logging
import os
import pathlib
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import PIL.Image
import pytest

httpx = pytest.importorskip('httpx', reason='the serve extra is not installed')
pytest.importorskip('starlette', reason='the serve extra is not installed')
pytest.importorskip('uvicorn', reason='the serve extra is not installed')

from nexjax.train import runs  # pylint: disable=g-import-not-at-top
import serve_helpers  # pylint: disable=g-import-not-at-top

ROOT = pathlib.Path(__file__).resolve().parents[1]
CHROMIUM, CHROMEDRIVER = '/usr/bin/chromium', '/usr/bin/chromedriver'
HEADLESS = ('--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
            '--disable-component-update', '--no-first-run')


def free_port() -> int:
  with socket.socket() as probe:
    probe.bind(('127.0.0.1', 0))
    return probe.getsockname()[1]


def wait_until_up(process, url: str, log: pathlib.Path, seconds: float = 300) -> None:
  deadline = time.monotonic() + seconds
  while time.monotonic() < deadline:
    if process.poll() is not None:
      raise RuntimeError(f'the server exited ({process.returncode}):\n{log.read_text()[-3000:]}')
    try:
      if httpx.get(url + '/health', timeout=2).status_code == 200:
        return
    except httpx.HTTPError:
      pass
    time.sleep(0.5)
  raise RuntimeError(f'the server did not answer in {seconds} s:\n{log.read_text()[-3000:]}')


@pytest.fixture(scope='module')
def server(tmp_path_factory, make_kaggle_folder, compile_cache):
  """(base URL, config, workdir, data folder) of a server started by launch.py."""
  root = tmp_path_factory.mktemp('serve_http')
  config, workdir, data = serve_helpers.train_workdir(root, make_kaggle_folder)
  review = root / 'review_in'
  review.mkdir()  # new images, mirrored test ones: a test image labelled for training is refused
  for image in sorted((data / 'test' / 'all_tests').iterdir()):
    with PIL.Image.open(image) as pixels:
      PIL.Image.fromarray(np.asarray(pixels)[:, ::-1]).save(review / f'{image.stem}.png')
  port = free_port()
  log = root / 'server.log'
  env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=str(compile_cache), PYTHONPATH=str(ROOT))
  with open(log, 'w') as out:
    process = subprocess.Popen(
        [sys.executable, 'launch.py', '--config=configs/finetune.py:smoke', f'--workdir={workdir}',
         '--mode=serve', f'--config.serve.port={port}', f'--config.serve.review_dir={review}',
         f'--config.data.cache_dir={root / "cache"}'], cwd=ROOT, env=env, stdout=out,
        stderr=subprocess.STDOUT)
  url = f'http://127.0.0.1:{port}'
  try:
    wait_until_up(process, url, log)
    yield url, config, workdir, data
  finally:
    process.terminate()
    try:
      process.wait(30)
    except subprocess.TimeoutExpired:
      process.kill()
      process.wait()


def test_real_requests(server):
  url = server[0]
  rng = np.random.default_rng(2)
  images = [('files', (f'{i}.png', serve_helpers.encoded(
      rng.integers(0, 256, (80, 80), dtype=np.uint8)), 'image/png')) for i in range(3)]
  response = httpx.post(url + '/predict', files=images, timeout=60)
  assert response.status_code == 200, response.text
  assert [r['file'] for r in response.json()['results']] == ['0.png', '1.png', '2.png']
  bomb = [('files', ('bomb.png', serve_helpers.png_header(20000, 20000), 'image/png'))]
  response = httpx.post(url + '/predict', files=bomb, timeout=60)
  assert response.status_code == 400 and 'too many pixels' in response.json()['error']
  health = httpx.get(url + '/health', timeout=10).json()
  assert health['threshold'] == 0.3 and health['batches'] >= 1


def test_a_port_in_use_is_one_line_and_exit_2(tmp_path):
  with socket.socket() as holder:
    holder.bind(('127.0.0.1', 0))
    holder.listen()
    port = holder.getsockname()[1]
    done = subprocess.run(
        [sys.executable, 'launch.py', '--config=configs/finetune.py:smoke',
         f'--workdir={tmp_path}', '--mode=serve', f'--config.serve.port={port}'], cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True, timeout=300)
  assert done.returncode == 2 and 'Serving' not in done.stdout, done.stdout + done.stderr
  assert done.stderr.strip().splitlines()[-1] == (
      f'error: cannot listen on 127.0.0.1:{port} (Address already in use): another server may '
      'hold it; choose another with --config.serve.port=PORT (or --config.serve.host).')


def raw_get(url: str, target: str, host_header: str = '') -> bytes:
  """The response to a request line sent as is (no client normalises the path)."""
  host, port = url.removeprefix('http://').split(':')
  host_header = host_header or f'{host}:{port}'
  with socket.create_connection((host, int(port)), timeout=10) as connection:
    connection.sendall(f'GET {target} HTTP/1.1\r\nHost: {host_header}\r\n'
                       'Connection: close\r\n\r\n'.encode())
    chunks = []
    while chunk := connection.recv(65536):
      chunks.append(chunk)
  return b''.join(chunks)


@pytest.mark.parametrize('target', [
    '/static/../../etc/passwd', '/static/..%2F..%2Fetc%2Fpasswd', '/../../../../etc/passwd',
    '/static/%2e%2e/%2e%2e/etc/passwd', '/static//etc/passwd', '/review/../../etc/passwd',
    '/static/..%252F..%252Fetc%252Fpasswd', '/review/overlay/..%2F..%2F..%2Fetc%2Fpasswd'])
def test_path_traversal_over_the_wire(server, target):
  response = raw_get(server[0], target)
  status = int(response.split(b' ', 2)[1])
  assert status in (400, 404) and b'root:' not in response, response[:200]


def test_a_rebound_host_name_reads_nothing(server):
  for target in ('/health', '/review/items', '/review'):
    response = raw_get(server[0], target, host_header='evil.example:80')
    assert response.startswith(b'HTTP/1.1 400') and b'workdir' not in response, response[:300]


def test_clients_that_disconnect_during_upload_are_one_log_line_each(server):
  url, _, workdir, _ = server
  host, port = url.removeprefix('http://').split(':')
  log = workdir.parent / 'server.log'
  for _ in range(3):
    with socket.create_connection((host, int(port)), timeout=10) as connection:
      connection.sendall(f'POST /predict HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: '
                         'multipart/form-data; boundary=zz\r\nContent-Length: 100000\r\n\r\n'
                         '--zz\r\n'.encode())
  wait_for(lambda: log.read_text().count('disconnected during POST /predict') == 3, 30)
  assert httpx.get(url + '/health', timeout=10).status_code == 200
  assert 'Traceback' not in log.read_text() and 'ClientDisconnect' not in log.read_text()


def browser():
  """A headless chromium driven by Selenium, or a skip saying what is missing."""
  webdriver = pytest.importorskip('selenium.webdriver', reason='selenium is not installed '
                                  "(pip install -e '.[browser]')")
  for path in (CHROMIUM, CHROMEDRIVER):
    if not os.access(path, os.X_OK):
      pytest.skip(f'{path} is missing: apt-get install chromium chromium-driver')
  options = webdriver.ChromeOptions()
  options.binary_location = CHROMIUM
  for flag in HEADLESS + ('--window-size=1200,900',):
    options.add_argument(flag)
  return webdriver.Chrome(options=options, service=webdriver.ChromeService(CHROMEDRIVER))


def wait_for(condition, seconds: float = 60):
  """condition()'s first true value; an element the page re-rendered meanwhile (stale) is
  looked up again on the next try."""
  from selenium.common import exceptions  # pylint: disable=import-outside-toplevel
  deadline = time.monotonic() + seconds
  while time.monotonic() < deadline:
    try:
      value = condition()
    except exceptions.StaleElementReferenceException:
      value = None
    if value:
      return value
    time.sleep(0.2)
  raise AssertionError('timed out waiting in the browser')


def test_review_page_in_a_browser_then_training_reads_the_label(server, tmp_path, caplog):
  url, config, workdir, _ = server
  driver = browser()
  from selenium.webdriver.common.by import By  # pylint: disable=import-outside-toplevel
  from selenium.webdriver.support.ui import Select  # pylint: disable=import-outside-toplevel
  try:
    driver.get(url + '/review')
    scores = wait_for(lambda: [float(c.get_attribute('data-p'))
                               for c in driver.find_elements(By.CSS_SELECTOR, '.card')])
    assert len(scores) >= 4
    assert scores == sorted(scores, reverse=True)
    Select(driver.find_element(By.ID, 'sort')).select_by_value('asc')
    first = wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, '.card')[0]
                     .get_attribute('data-id'))
    # Labelled while the overlays still load: they must not hold up the operator's label.
    wait_for(lambda: driver.find_element(
        By.CSS_SELECTOR, f'.card[data-id="{first}"] button.set-defect').click() or True)
    wait_for(lambda: 'label: defect' in driver.find_element(
        By.CSS_SELECTOR, f'.card[data-id="{first}"] .label').text)
    wait_for(lambda: driver.execute_script(
        "return [...document.images].every(i => i.complete && i.naturalWidth === 96)"))
    driver.refresh()
    label = wait_for(lambda: [e.text for e in driver.find_elements(
        By.CSS_SELECTOR, f'.card[data-id="{first}"] .label')])
    assert label[0] == 'label: defect'
    Select(driver.find_element(By.ID, 'filter')).select_by_value('unlabelled')
    assert first not in wait_for(lambda: [c.get_attribute('data-id') for c in
                                          driver.find_elements(By.CSS_SELECTOR, '.card')] or [''])
  finally:
    driver.quit()
  table = workdir / 'review' / 'labels.csv'
  with open(table) as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == 1 and rows[0]['label'] == '1' and pathlib.Path(rows[0]['file']).is_absolute()
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.data.extra_labels = str(table)
  caplog.set_level(logging.INFO)
  runs.train_and_evaluate(config, tmp_path / 'retrained')
  assert f'Added 1 labelled image(s) (1 defects) from {table}' in caplog.text
  assert (tmp_path / 'retrained' / 'checkpoints').is_dir()


ATTACK = """<!doctype html><title>attacking</title><script>
const target = 'TARGET';
const png = Uint8Array.from(atob('PNG'), (c) => c.charCodeAt(0));
const label = JSON.stringify({id: 'f0', label: 'good'});
const tries = {
  text_plain_label: () => fetch(target + '/review/label', {method: 'POST', mode: 'no-cors',
    headers: {'Content-Type': 'text/plain'}, body: label}),
  json_label: () => fetch(target + '/review/label', {method: 'POST',
    headers: {'Content-Type': 'application/json'}, body: label}),
  form_predict: () => {
    const form = new FormData();
    form.append('files', new Blob([png], {type: 'image/png'}), 'attack.png');
    return fetch(target + '/predict', {method: 'POST', mode: 'no-cors', body: form});
  },
  large_body: () => fetch(target + '/review/label', {method: 'POST', mode: 'no-cors',
    headers: {'Content-Type': 'text/plain'}, body: 'x'.repeat(30 * 2 ** 20)}),
};
(async () => {
  const outcome = {};
  for (const [name, attempt] of Object.entries(tries)) {
    try { outcome[name] = (await attempt()).type; } catch (e) { outcome[name] = 'blocked'; }
  }
  window.outcome = outcome;
  document.title = 'done';
})();
</script>"""


@pytest.fixture
def other_origin(server):
  """The URL of a page on another origin (localhost, another port) that attacks the server."""
  pixels = np.random.default_rng(7).integers(0, 256, (96, 96), dtype=np.uint8)
  page = ATTACK.replace('TARGET', server[0]).replace(
      'PNG', base64.b64encode(serve_helpers.encoded(pixels)).decode()).encode()

  class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # pylint: disable=invalid-name
      self.send_response(200)
      self.send_header('Content-Type', 'text/html')
      self.end_headers()
      self.wfile.write(page)

    def log_message(self, *args):
      del args
  attacker = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
  threading.Thread(target=attacker.serve_forever, daemon=True).start()
  yield f'http://localhost:{attacker.server_address[1]}/'
  attacker.shutdown()
  attacker.server_close()


def test_another_sites_page_changes_nothing(server, other_origin):
  url, _, workdir, _ = server
  table = workdir / 'review' / 'labels.csv'
  before = table.read_bytes() if table.is_file() else None
  get = functools.partial(httpx.get, timeout=10)
  items, batches = len(get(url + '/review/items').json()['items']), \
      get(url + '/health').json()['batches']
  driver = browser()
  try:
    driver.get(other_origin)
    wait_for(lambda: driver.title == 'done')
    outcome = driver.execute_script('return window.outcome')
  finally:
    driver.quit()
  assert outcome['json_label'] == 'blocked', outcome  # no CORS preflight is ever granted
  assert (table.read_bytes() if table.is_file() else None) == before, outcome
  assert len(get(url + '/review/items').json()['items']) == items, outcome
  assert get(url + '/health').json()['batches'] == batches, outcome
