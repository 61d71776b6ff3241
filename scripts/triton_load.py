"""Requests/s and latency of a model served by Triton, with closed-loop clients (as perf_analyzer's
concurrency mode): each of C clients sends its next request when the last one is answered.

    python scripts/triton_load.py --model PKG_OR_CKPT [--size 256] [--concurrency 1,8] [--requests 200]
        [--instances 1] [--threads N] [--protocol http|grpc] [--url HOST:PORT]

Without ``--url`` it serves the model itself (``moce serve``'s code: ONNX Runtime on the CPU,
free ports on 127.0.0.1) and stops the server at the end. Images are random SIZE x SIZE UINT8,
one per request; a warm-up of 2 x C requests is not counted.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from moce.apps.triton import ServeOptions, write_repository
from moce.apps.tritonserver import Ports, TritonServer, find_server
from moce.runtime.resolve import open_model


def client_module(protocol: str):  # noqa: ANN201 - tritonclient.http or tritonclient.grpc
    if protocol == "grpc":
        import tritonclient.grpc as module
    else:
        import tritonclient.http as module
    return module


def run_clients(url: str, protocol: str, concurrency: int, requests: int, image: np.ndarray) -> list[float]:
    """Latencies (s) of ``requests`` requests spread over ``concurrency`` closed-loop clients."""
    module = client_module(protocol)
    latencies: list[float] = []
    lock = threading.Lock()

    def client(count: int) -> None:
        connection = module.InferenceServerClient(url)
        tensor = module.InferInput("IMAGE", list(image.shape), "UINT8")
        tensor.set_data_from_numpy(image)
        mine = []
        for _ in range(count):
            start = time.perf_counter()
            connection.infer("moce", [tensor])
            mine.append(time.perf_counter() - start)
        connection.close()
        with lock:
            latencies.extend(mine)

    shares = [requests // concurrency + (i < requests % concurrency) for i in range(concurrency)]
    threads = [threading.Thread(target=client, args=(n,)) for n in shares]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="package or checkpoint [default: bundled demo model]")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--concurrency", default="1,8")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--instances", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="runtime threads per instance [default: all cores]")
    parser.add_argument("--protocol", choices=("http", "grpc"), default="http")
    parser.add_argument("--url", default=None, help="a running server (HTTP or gRPC address, as --protocol)")
    args = parser.parse_args()
    image = (np.random.default_rng(0).random((1, args.size, args.size, 3)) * 255).astype(np.uint8)
    with ExitStack() as stack:
        url = args.url
        if url is None:
            options = ServeOptions.of(backend="onnxruntime", instances=args.instances, threads=args.threads)
            repo = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "repo"
            write_repository(open_model(args.model).root, repo, options)
            server = stack.enter_context(TritonServer(repo, find_server(), ports=Ports.free(), exit_timeout_s=5))
            url = server.http_url if args.protocol == "http" else server.grpc_url
        print(f"model {args.model or 'bundled demo'}, {args.size}x{args.size} UINT8, {args.protocol} {url}")
        print(f"{'clients':>8} {'requests':>9} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
        for concurrency in (int(c) for c in args.concurrency.split(",")):
            run_clients(url, args.protocol, concurrency, 2 * concurrency, image)
            start = time.perf_counter()
            latencies = np.array(run_clients(url, args.protocol, concurrency, args.requests, image)) * 1000
            seconds = time.perf_counter() - start
            p50, p99 = np.percentile(latencies, [50, 99])
            print(f"{concurrency:>8} {len(latencies):>9} {len(latencies) / seconds:>8.1f} {p50:>8.1f} {p99:>8.1f}")


if __name__ == "__main__":
    main()
