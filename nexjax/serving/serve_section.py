"""The `serve` section: the address, limits and batching of `--mode=serve`, read by
nexjax.modes.serve and nexjax.serving.app (`Service`, frozen): none of its keys is part of a
run. Light imports only: the config files build the section from it."""

import pathlib

from nexjax import sections


def check(serve, found: sections.Problems) -> None:
  """The values alone, for `--mode=serve`; nexjax/config.py checks the runtime and the token
  (serve.token or its environment variable) that a reachable host needs."""

  def check_value(ok, key, message):
    found.check(ok, f'{key}={serve[key]!r}', message)

  check_value(isinstance(serve.host, str) and serve.host, 'host', 'give an address to bind to')
  check_value(0 < serve.port < 65536, 'port', 'must be a TCP port, 1..65535')
  check_value(serve.max_upload_mb > 0, 'max_upload_mb', 'must be positive')
  check_value(serve.max_pixels > 0, 'max_pixels', 'must be positive')
  check_value(0 <= serve.batch_window_ms <= 1000, 'batch_window_ms', 'must be in 0..1000 ms')
  check_value(1 <= serve.max_batch <= 1024, 'max_batch', 'must be in 1..1024')
  check_value(not serve.review_dir or pathlib.Path(serve.review_dir).is_dir(), 'review_dir',
              'is not a folder')


SECTION = sections.Section('serve', dict(
    host=sections.Key('127.0.0.1', 'the address to bind; another than 127.0.0.1 needs a token',
                      sections.OUTSIDE),
    port=sections.Key(8080, 'the TCP port', sections.OUTSIDE),
    token=sections.Key(
        '', "'' -> $NEXJAX_SERVE_TOKEN; required off 127.0.0.1 (16+ non-space characters)",
        sections.OUTSIDE),
    review_dir=sections.Key('', 'a folder scored at start-up for the review page',
                            sections.OUTSIDE),
    max_upload_mb=sections.Key(
        20.0, 'per request, any route (413 above; JSON bodies: 16 KB)', sections.OUTSIDE),
    max_pixels=sections.Key(
        40_000_000, 'per image, read from its header before decoding (400 above)',
        sections.OUTSIDE),
    batch_window_ms=sections.Key(
        5.0, 'how long the first request of a batch waits for others', sections.OUTSIDE),
    max_batch=sections.Key(32, 'the most images scored in one call', sections.OUTSIDE),
    runtime=sections.Key(
        'jax', "the checkpoint; or 'openvino', 'onnxruntime', 'auto': the export folder alone",
        sections.OUTSIDE),
), check)
