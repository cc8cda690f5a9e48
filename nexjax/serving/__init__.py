"""`--mode=serve`: the workdir's network behind HTTP, with a review page (see `app`).

Needs the `serve` extra (Starlette, uvicorn, python-multipart); imported only by this mode.
"""

import os
import pathlib
import socket

from nexjax import errors

LOOPBACK = ('127.0.0.1', 'localhost', '::1')
TOKEN_ENV = 'NEXJAX_SERVE_TOKEN'
MIN_TOKEN_LENGTH = 16
RUNTIMES = ('jax', 'openvino', 'onnxruntime', 'auto')  # serving/runtime.create


def check_config(config) -> str:
  """Checks `config.serve` (one-line errors) and returns the token ('' for none)."""
  serve = config.serve
  problems = []

  def check(ok, key, message):
    if not ok:
      problems.append(f'config.serve.{key}={serve[key]!r}: {message}')

  check(isinstance(serve.host, str) and serve.host, 'host', 'give an address to bind to')
  check(0 < serve.port < 65536, 'port', 'must be a TCP port, 1..65535')
  check(serve.max_upload_mb > 0, 'max_upload_mb', 'must be positive')
  check(serve.max_pixels > 0, 'max_pixels', 'must be positive')
  check(0 <= serve.batch_window_ms <= 1000, 'batch_window_ms', 'must be in 0..1000 ms')
  check(1 <= serve.max_batch <= 1024, 'max_batch', 'must be in 1..1024')
  check(serve.runtime in RUNTIMES, 'runtime', f'use one of {RUNTIMES}')
  check(not serve.review_dir or pathlib.Path(serve.review_dir).is_dir(), 'review_dir',
        'is not a folder')
  token = serve.token or os.environ.get(TOKEN_ENV, '')
  if token and len(token) < MIN_TOKEN_LENGTH:
    problems.append(f'the serve token is {len(token)} characters; use at least '
                    f'{MIN_TOKEN_LENGTH} (e.g. python -c "import secrets; '
                    'print(secrets.token_urlsafe())").')
  if not token and serve.host not in LOOPBACK:
    problems.append(f'config.serve.host={serve.host!r} is reachable from other machines: set a '
                    f'token with --config.serve.token=TOKEN or ${TOKEN_ENV} (clients send '
                    '"Authorization: Bearer TOKEN"), or bind to 127.0.0.1.')
  if problems:
    raise errors.ConfigError('; '.join(problems))
  return token


def check_port_free(host: str, port: int) -> None:
  family = socket.AF_INET6 if ':' in host else socket.AF_INET
  with socket.socket(family, socket.SOCK_STREAM) as probe:
    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
      probe.bind((host, port))
    except OSError as e:
      raise errors.ConfigError(f'config.serve.port={port}: cannot listen on {host}:{port} '
                               f'({e.strerror}); choose another port or host.') from None


def serve(config, workdir) -> None:
  """Loads the workdir, compiles, scores `serve.review_dir`, then serves until Ctrl-C."""
  token = check_config(config)
  check_port_free(config.serve.host, config.serve.port)
  try:
    import uvicorn  # pylint: disable=import-outside-toplevel
    from nexjax.serving import app  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise errors.ConfigError(f"--mode=serve needs the serve extra ({e.name} is missing): "
                             "pip install -c constraints.txt -e '.[serve]'") from None
  from nexjax.serving import runtime as runtime_lib  # pylint: disable=import-outside-toplevel
  runtime = runtime_lib.create(config, workdir, config.serve.max_batch)
  runtime.warm_up()
  service = app.Service(runtime, config.serve, token, app.review_files(config, runtime))
  info = runtime.info
  url = f'http://{config.serve.host}:{config.serve.port}'
  print(f'Serving {info.model}, checkpoint step {info.checkpoint_step}, threshold '
        f'{info.threshold:.4f} on {url} (review page: {url}/review'
        f'{", token required" * bool(token)})', flush=True)
  uvicorn.run(service.app(), host=config.serve.host, port=config.serve.port,
              log_level='warning', access_log=False, server_header=False)
