"""`--mode=serve`: the workdir's network behind HTTP, with a review page (`nexjax.serving.app`).

Needs the `serve` extra (Starlette, uvicorn, python-multipart), imported only when serving. The
address is bound first, before minutes of loading and compiling, and held until uvicorn serves
on that very socket: "Serving ... on" is printed only once the server is listening.
"""

import socket

from nexjax import errors
from nexjax import serving
from nexjax.serving import serve_section
from nexjax.train import train_section


def bind(host: str, port: int) -> socket.socket:
  """A socket bound to host:port (not yet listening), or a one-line ConfigError."""
  family = socket.AF_INET6 if ':' in host else socket.AF_INET
  listener = socket.socket(family, socket.SOCK_STREAM)
  listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
  try:
    listener.bind((host, port))
  except OSError as e:
    listener.close()
    raise errors.ConfigError(f'cannot listen on {host}:{port} ({e.strerror}): another server '
                             'may hold it; choose another with --config.serve.port=PORT (or '
                             '--config.serve.host).') from None
  return listener


def serve(config, workdir) -> None:
  """Loads the workdir, compiles, scores `serve.review_dir`, then serves until Ctrl-C."""
  secret = serving.token(config)
  try:
    import uvicorn  # pylint: disable=import-outside-toplevel
    from nexjax.serving import app  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise errors.ConfigError(f"--mode=serve needs the serve extra ({e.name} is missing): "
                             "pip install -c constraints.txt -e '.[serve]'") from None
  from nexjax.serving import served as runtime_lib  # pylint: disable=import-outside-toplevel
  settings = serve_section.SECTION.of(config)
  listener = bind(settings.host, settings.port)
  with listener:
    runtime = runtime_lib.create(config, workdir, settings.max_batch)
    runtime.warm_up()
    progress = train_section.SECTION.of(config).progress
    service = app.Service(runtime, settings, secret,
                          app.review_files(settings.review_dir, runtime, progress))
    listener.listen(128)
    info = runtime.info
    url = f'http://{settings.host}:{settings.port}'
    served = info.model + ('' if info.detector else f', checkpoint step {info.checkpoint_step}')
    print(f'Serving {served}, threshold {info.threshold:.4g} ({info.score}) on {url} (review page: '
          f'{url}/review'
          f'{", token required" * bool(secret)})', flush=True)
    server = uvicorn.Server(uvicorn.Config(service.app(), log_level='warning', access_log=False,
                                           server_header=False))
    server.run(sockets=[listener])
