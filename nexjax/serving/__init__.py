"""Serving the workdir's network over HTTP (`--mode=serve`, `nexjax.modes.serve`): its settings
and token. `app` needs the `serve` extra (Starlette, uvicorn, python-multipart).
"""

import os

LOOPBACK = ('127.0.0.1', 'localhost', '::1')
TOKEN_ENV = 'NEXJAX_SERVE_TOKEN'
MIN_TOKEN_LENGTH = 16


def token(config) -> str:
  """The serve token: `serve.token`, else $NEXJAX_SERVE_TOKEN, else '' (none)."""
  return config.serve.token or os.environ.get(TOKEN_ENV, '')


