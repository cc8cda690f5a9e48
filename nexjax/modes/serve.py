"""`--mode=serve`: the workdir's network behind HTTP, with a review page (`nexjax.serving.app`).

Needs the `serve` extra (Starlette, uvicorn, python-multipart), imported only when serving.
"""

import socket

from nexjax import errors
from nexjax import serving


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
  secret = serving.token(config)
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
  service = app.Service(runtime, config.serve, secret, app.review_files(config, runtime))
  info = runtime.info
  url = f'http://{config.serve.host}:{config.serve.port}'
  print(f'Serving {info.model}, checkpoint step {info.checkpoint_step}, threshold '
        f'{info.threshold:.4f} on {url} (review page: {url}/review'
        f'{", token required" * bool(secret)})', flush=True)
  uvicorn.run(service.app(), host=config.serve.host, port=config.serve.port,
              log_level='warning', access_log=False, server_header=False)
