"""Load test of `--mode=serve`: N concurrent clients on 127.0.0.1 for a fixed time.

  python benchmarks/serve.py --workdir=W                 # starts the server, 32 clients, 60 s
  python benchmarks/serve.py --workdir=W --clients=8 --seconds=20 --json out.json \
      --config.predict.tta=False                         # overrides for the server it starts
  python benchmarks/serve.py --port=8080 --pid=PID       # a server already running here

First the reference: one client sending 32 images per request (the server's batch-32 figure,
HTTP included), then the load: `--clients` clients each sending one image per request as fast as
answers come, for `--seconds` (at most `--max_requests`). Reports images/s, latency p50/p99,
errors (any non-200 answer or failed request) and the server's resident memory (VmRSS) before,
every 5 s during, and after the load. Traffic goes only to 127.0.0.1, and the run stops by itself; a server it
started is stopped at the end.
"""

import argparse
import asyncio
import io
import json
import os
import pathlib
import socket
import subprocess
import sys
import time

import httpx
import numpy as np
import PIL.Image

ROOT = pathlib.Path(__file__).resolve().parents[1]
HOST = '127.0.0.1'


def rss_mib(pid: int) -> float:
  for line in pathlib.Path(f'/proc/{pid}/status').read_text().splitlines():
    if line.startswith('VmRSS:'):
      return int(line.split()[1]) / 1024
  raise RuntimeError(f'no VmRSS for process {pid}')


def test_images(size: int, count: int = 16) -> list[bytes]:
  rng = np.random.default_rng(0)
  images = []
  for _ in range(count):
    buffer = io.BytesIO()
    PIL.Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8)).save(buffer, 'PNG')
    images.append(buffer.getvalue())
  return images


def start_server(args, port: int) -> subprocess.Popen:
  command = [sys.executable, str(ROOT / 'launch.py'), f'--config={args.config}',
             f'--workdir={args.workdir}', '--mode=serve', f'--config.serve.host={HOST}',
             f'--config.serve.port={port}'] + args.override
  return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL)


def wait_until_up(url: str, process, seconds: float) -> dict:
  deadline = time.monotonic() + seconds
  while time.monotonic() < deadline:
    if process is not None and process.poll() is not None:
      raise SystemExit(f'the server exited with {process.returncode}')
    try:
      return httpx.get(f'{url}/health', timeout=2).raise_for_status().json()
    except httpx.HTTPError:
      time.sleep(0.5)
  raise SystemExit(f'no answer from {url} in {seconds} s')


async def run_clients(url: str, images: list[bytes], clients: int, per_request: int,
                      seconds: float, max_requests: int, pid: int | None = None) -> dict:
  """Each client posts `per_request` images per request until time or requests run out; the
  server's RSS (of `pid`) is sampled every 5 s."""
  latencies, errors, sent, rss = [], [], [0], []
  stop = time.monotonic() + seconds

  async def sample_rss():
    while pid and time.monotonic() < stop and sent[0] < max_requests:
      rss.append(round(rss_mib(pid), 1))
      await asyncio.sleep(5)

  async def client(index: int, http: httpx.AsyncClient):
    while time.monotonic() < stop and sent[0] < max_requests:
      sent[0] += 1
      files = [('files', (f'{i}.png', images[(index + i + sent[0]) % len(images)], 'image/png'))
               for i in range(per_request)]
      start = time.perf_counter()
      try:
        response = await http.post(f'{url}/predict', files=files)
        if response.status_code != 200:
          errors.append(f'{response.status_code} {response.text[:200]}')
      except httpx.HTTPError as e:
        errors.append(f'{type(e).__name__}: {e}')
      latencies.append(time.perf_counter() - start)

  began = time.monotonic()
  limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
  async with httpx.AsyncClient(limits=limits, timeout=120) as http:
    await asyncio.gather(sample_rss(), *(client(i, http) for i in range(clients)))
  elapsed = time.monotonic() - began
  ms = np.asarray(latencies) * 1000
  return {'clients': clients, 'images_per_request': per_request, 'requests': len(latencies),
          'seconds': round(elapsed, 1),
          'images_per_s': round((len(latencies) - len(errors)) * per_request / elapsed, 1),
          'p50_ms': round(float(np.percentile(ms, 50)), 1),
          'p99_ms': round(float(np.percentile(ms, 99)), 1),
          'errors': len(errors), 'first_errors': errors[:3], 'rss_mib_every_5s': rss}


def free_port() -> int:
  with socket.socket() as probe:
    probe.bind((HOST, 0))
    return probe.getsockname()[1]


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--workdir', help='a trained workdir: the benchmark starts its server')
  parser.add_argument('--config', default='configs/finetune.py')
  parser.add_argument('--port', type=int, default=0, help='a server already running here')
  parser.add_argument('--pid', type=int, help="that server's process id (for its memory)")
  parser.add_argument('--clients', type=int, default=32)
  parser.add_argument('--seconds', type=float, default=60.0)
  parser.add_argument('--reference_seconds', type=float, default=15.0)
  parser.add_argument('--max_requests', type=int, default=200_000)
  parser.add_argument('--json', help='also write the results here')
  args, args.override = parser.parse_known_args()  # --config.a.b=... for the server it starts
  unknown = [a for a in args.override if not a.startswith('--config.')]
  if unknown:
    parser.error(f'unrecognized arguments: {" ".join(unknown)}')
  if bool(args.workdir) == bool(args.port):
    parser.error('give --workdir (start a server) or --port with --pid (use a running one)')
  process = None
  if args.workdir:
    args.port = free_port()
    process = start_server(args, args.port)
  url = f'http://{HOST}:{args.port}'
  try:
    health = wait_until_up(url, process, 600)
    pid = process.pid if process else args.pid
    images = test_images(health['image_size'])
    result = {'health': health, 'cpu_count': os.cpu_count(), 'load_average': os.getloadavg()}
    result['reference'] = asyncio.run(run_clients(url, images, 1, 32, args.reference_seconds,
                                                  args.max_requests))
    result['rss_mib_start'] = round(rss_mib(pid), 1) if pid else None
    result['load'] = asyncio.run(run_clients(url, images, args.clients, 1, args.seconds,
                                             args.max_requests, pid))
    result['rss_mib_end'] = round(rss_mib(pid), 1) if pid else None
  finally:
    if process:
      process.terminate()
      process.wait(60)
  print(json.dumps(result, indent=1))
  ref, load = result['reference'], result['load']
  print(f"\nbatch-32 requests: {ref['images_per_s']} img/s; {load['clients']} clients x 1 image: "
        f"{load['images_per_s']} img/s, p50 {load['p50_ms']} ms, p99 {load['p99_ms']} ms, "
        f"{load['errors']} errors in {load['requests']} requests; server RSS "
        f"{result['rss_mib_start']} -> {result['rss_mib_end']} MiB")
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(result, indent=1))
  return 1 if load['errors'] or ref['errors'] else 0


if __name__ == '__main__':
  sys.exit(main())
