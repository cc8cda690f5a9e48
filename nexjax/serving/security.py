"""The server's request rules, all in one place: an ASGI middleware (`Guard`) in front of every
route, and the bearer-token check the routes add.

- Host: the `Host` header must name the address the server is bound to (any loopback name when
  bound to loopback; on a wildcard address an IP literal, localhost or this machine's name), so
  a page on a DNS name rebound to 127.0.0.1 reads nothing (400, every route).
- Cross-site requests: a POST whose `Origin` is not this server, or whose `Sec-Fetch-Site` is
  not same-origin, is refused (403) whatever the token. Scripts (curl) send no Origin: they may
  POST /predict as before.
- /review/label also needs `Content-Type: application/json` (415; a cross-site page cannot send
  it without a CORS preflight, which the server never grants) and, without a token, the
  process's CSRF secret as `X-CSRF-Token` (403): the review page receives it in its HTML.
- Bodies: `Content-Length` above the route's limit is refused before reading (413), and
  streamed bodies are counted as they arrive: `serve.max_upload_mb` for /predict and any other
  route, `JSON_LIMIT` for the JSON routes. Nothing larger is ever held in memory.
"""

import hmac
import ipaddress
import json
import socket

from starlette.datastructures import Headers
from starlette.responses import JSONResponse

LOOPBACK_NAMES = ('127.0.0.1', 'localhost', '[::1]')
WILDCARD = ('0.0.0.0', '::', '')
JSON_ROUTES = ('/review/label',)
JSON_LIMIT = 16 * 1024  # bytes of a JSON request body
SAFE_METHODS = ('GET', 'HEAD', 'OPTIONS')
CSRF_HEADER = 'x-csrf-token'


class Refused(Exception):
  """A request the server refuses: `status` (4xx) and a one-line message."""

  def __init__(self, status: int, message: str):
    super().__init__(message)
    self.status = status


def error(status: int, message: str) -> JSONResponse:
  return JSONResponse({'error': message}, status)


def host_name(host: str) -> str:
  """`host` as a Host header writes it: IPv6 literals in brackets."""
  return f'[{host}]' if ':' in host and not host.startswith('[') else host


def split_host(value: str) -> tuple[str, str]:
  """('name', 'port') of a Host header value; port '' when absent."""
  name, _, port = value.rpartition(':') if not value.endswith(']') else (value, '', '')
  if not name or (name.startswith('[') != name.endswith(']')):
    return value, ''
  return name, port


def is_ip_literal(name: str) -> bool:
  try:
    ipaddress.ip_address(name.strip('[]'))
    return True
  except ValueError:
    return False


class Rules:
  """What a request must satisfy on a server bound to `host:port`, with its token (or '') and
  the process's CSRF secret."""

  def __init__(self, host: str, port: int, token: str, csrf: str, upload_limit: int):
    self.host, self.port = host, port
    self.token, self.csrf, self.upload_limit = token, csrf, upload_limit
    if host in WILDCARD:
      self.names = {'localhost', socket.gethostname().lower(), socket.getfqdn().lower()}
    elif host in LOOPBACK_NAMES or host_name(host) in LOOPBACK_NAMES:
      self.names = set(LOOPBACK_NAMES)
    else:
      self.names = {host_name(host).lower()}

  def described(self) -> str:
    if self.host in WILDCARD:
      return f'an IP address or this machine\'s name, port {self.port}'
    return ' or '.join(f'{name}:{self.port}' for name in sorted(self.names))

  def check_host(self, headers: Headers) -> None:
    value = headers.get('host', '').lower()
    name, port = split_host(value)
    known = name in self.names or (self.host in WILDCARD and is_ip_literal(name))
    if not known or port != (str(self.port) if port or self.port != 80 else ''):
      raise Refused(400, f'Host header {value[:100]!r} is not this server\'s address '
                         f'({self.described()}): open it by that address, or start the server '
                         'with --config.serve.host=NAME.')

  def limit(self, path: str) -> int:
    return JSON_LIMIT if path in JSON_ROUTES else self.upload_limit

  def check_length(self, headers: Headers, path: str) -> None:
    length = headers.get('content-length', '')
    if length.isdigit() and int(length) > self.limit(path):
      raise too_large(path, self.limit(path), f'request of {int(length)} bytes')

  @staticmethod
  def check_same_origin(headers: Headers) -> None:
    """A POST from a page of another origin is refused; one with no Origin (curl) passes."""
    site = headers.get('sec-fetch-site', '')
    if site and site not in ('same-origin', 'none'):
      raise Refused(403, f'cross-site request refused (Sec-Fetch-Site: {site[:40]}).')
    origin = headers.get('origin')
    own = f'http://{headers.get("host", "").lower()}'
    if origin is not None and origin.lower() != own:
      raise Refused(403, f'cross-site request refused: Origin {origin[:100]!r} is not this '
                         f'server ({own}).')

  def check_json_route(self, headers: Headers, path: str) -> None:
    kind = headers.get('content-type', '').split(';')[0].strip().lower()
    if kind != 'application/json':
      raise Refused(415, f'{path} takes Content-Type: application/json (got {kind[:60]!r}).')
    if not self.token and not hmac.compare_digest(
        headers.get(CSRF_HEADER, '').encode(), self.csrf.encode()):
      raise Refused(403, f'missing or wrong X-CSRF-Token: {path} takes requests from the review '
                         'page this server process served (GET /review).')

  def check(self, scope) -> None:
    """Everything decided from the request line and headers, before any body byte is read."""
    headers, path = Headers(scope=scope), scope['path']
    self.check_host(headers)
    self.check_length(headers, path)
    if scope['method'] not in SAFE_METHODS:
      self.check_same_origin(headers)
      if path in JSON_ROUTES:
        self.check_json_route(headers, path)

  def authorized(self, headers: Headers) -> bool:
    """The bearer token, compared in constant time (always true without a token)."""
    if not self.token:
      return True
    given = headers.get('authorization', '')
    return hmac.compare_digest(given.encode(), f'Bearer {self.token}'.encode())


def too_large(path: str, limit: int, what: str) -> Refused:
  setting = 'the JSON body limit' if path in JSON_ROUTES else 'serve.max_upload_mb'
  return Refused(413, f'{what}, above {setting} ({limit} bytes) for {path}.')


def bounded(receive, path: str, limit: int):
  """`receive` that counts body bytes and refuses (413) as soon as they pass `limit`."""
  size = 0

  async def counted():
    nonlocal size
    message = await receive()
    if message['type'] == 'http.request':
      size += len(message.get('body', b''))
      if size > limit:
        raise too_large(path, limit, 'request body')
    return message
  return counted


class Guard:
  """ASGI middleware applying `Rules` to every HTTP request; a refusal is a JSON error."""

  def __init__(self, app, rules: Rules):
    self.app, self.rules = app, rules

  async def __call__(self, scope, receive, send):
    if scope['type'] != 'http':
      return await self.app(scope, receive, send)
    try:
      self.rules.check(scope)
    except Refused as e:
      return await error(e.status, str(e))(scope, receive, send)
    started = False

    async def tracked(message):
      nonlocal started
      started = started or message['type'] == 'http.response.start'
      await send(message)
    try:
      await self.app(scope, bounded(receive, scope['path'], self.rules.limit(scope['path'])),
                     tracked)
    except Refused as e:  # raised while a route read its body
      if started:
        raise
      await error(e.status, str(e))(scope, receive, send)


def json_object(body: bytes, shape: str) -> dict:
  """The JSON object of a (bounded) body, or Refused(400) saying `shape`, the object expected:
  invalid, deeply nested or non-object JSON is one line, never a traceback."""
  try:
    value = json.loads(body)
  except (ValueError, RecursionError) as e:
    reason = 'nested too deeply' if isinstance(e, RecursionError) else 'not JSON'
    raise Refused(400, f'body {reason}: send {shape}.') from None
  if not isinstance(value, dict):
    raise Refused(400, f'body is a JSON {type(value).__name__}: send {shape}.')
  return value
