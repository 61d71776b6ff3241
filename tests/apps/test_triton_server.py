"""A real Triton Inference Server on a `moce triton` repository, on 127.0.0.1 with free ports:
HTTP and gRPC answers equal local restore, endpoints answer, bad requests get clean errors and
the server keeps serving, concurrent clients are all answered. `make install` puts the server in
place (`moce install-tritonserver`); without one these tests skip."""

from __future__ import annotations

import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest

from moce.apps.job import RestoreJob
from moce.apps.restore import restore
from moce.apps.session_options import SessionOptions
from moce.apps.triton import OUTPUTS, ServeOptions, write_repository
from moce.apps.tritonserver import Ports, ServerError, TritonServer, find_server

http = pytest.importorskip("tritonclient.http", reason="needs tritonclient: pip install 'moce[dev]'")
grpc = pytest.importorskip("tritonclient.grpc", reason="needs tritonclient: pip install 'moce[dev]'")
from tritonclient.utils import InferenceServerException  # noqa: E402


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_pkg):
    try:
        install = find_server()
    except ServerError as exc:
        pytest.skip(str(exc))
    root = tmp_path_factory.mktemp("served")
    options = ServeOptions.of(backend="onnxruntime", threads=1, max_batch_size=8)
    write_repository(tiny_pkg.root, root / "repo", options)
    with TritonServer(root / "repo", install, ports=Ports.free(), exit_timeout_s=5) as running:
        yield running
    assert running.process.poll() is not None  # stopped
    assert not running.ready()


def _infer(module, url: str, image: np.ndarray, name: str = "IMAGE") -> dict[str, np.ndarray]:
    """One request through ``module`` (tritonclient.http or .grpc): the image output and the routes."""
    client = module.InferenceServerClient(url)
    tensor = module.InferInput(name, list(image.shape), "UINT16" if image.dtype == np.uint16 else "UINT8")
    tensor.set_data_from_numpy(image)
    try:
        result = client.infer("moce", [tensor])
    finally:
        client.close()
    return {output: result.as_numpy(output) for output in (OUTPUTS[name], "ROUTES")}


def _infer_http(server, image: np.ndarray, name: str = "IMAGE") -> dict[str, np.ndarray]:
    return _infer(http, server.http_url, image, name)


def _infer_grpc(server, image: np.ndarray, name: str = "IMAGE") -> dict[str, np.ndarray]:
    return _infer(grpc, server.grpc_url, image, name)


def _local(tmp_path: Path, images: dict[str, np.ndarray], tiny_pkg) -> dict[str, np.ndarray]:
    (tmp_path / "in").mkdir()
    for name, image in images.items():
        cv2.imwrite(str(tmp_path / "in" / f"{name}.png"), image[:, :, ::-1] if image.shape[2] == 3 else image)
    restore(
        RestoreJob(tmp_path / "in", tmp_path / "out", tiny_pkg.root, SessionOptions(backend="onnxruntime", threads=1))
    )
    return {n: cv2.imread(str(tmp_path / "out" / f"{n}.png"), cv2.IMREAD_UNCHANGED) for n in images}


def test_http_and_grpc_answers_equal_local_restore(tmp_path, server, tiny_pkg):
    rng = np.random.default_rng(11)
    images = {
        "rgb8": (rng.random((40, 64, 3)) * 255).astype(np.uint8),
        "gray16": (rng.random((48, 32, 1)) * 65535).astype(np.uint16),
    }
    local = _local(tmp_path, images, tiny_pkg)
    for name, image in images.items():
        output = "RESTORED_UINT16" if image.dtype == np.uint16 else "RESTORED"
        key = "IMAGE_UINT16" if image.dtype == np.uint16 else "IMAGE"
        for infer in (_infer_http, _infer_grpc):
            answer = infer(server, image[None], key)
            served = answer[output][0]
            served = served[:, :, ::-1] if served.shape[2] == 3 else served[:, :, 0]
            assert np.array_equal(served, local[name]), (name, infer.__name__)
            assert answer["ROUTES"].shape == (1, 3, 1)


def test_health_ready_and_metrics_endpoints_answer(server):
    base = f"http://{server.http_url}"
    for path in ("/v2/health/live", "/v2/health/ready", "/v2/models/moce/ready"):
        with urllib.request.urlopen(base + path, timeout=5) as response:
            assert response.status == 200, path
    with urllib.request.urlopen(f"http://{server.host}:{server.ports.metrics}/metrics", timeout=5) as response:
        assert b"nv_inference_request_success" in response.read()
    client = grpc.InferenceServerClient(server.grpc_url)
    assert client.is_server_ready()
    client.close()


def test_malformed_requests_get_clean_errors_and_the_server_keeps_serving(server):
    client = http.InferenceServerClient(server.http_url)

    def fails(name: str, array: np.ndarray, dtype: str) -> str:
        tensor = http.InferInput(name, list(array.shape), dtype)
        tensor.set_data_from_numpy(array)
        with pytest.raises(InferenceServerException) as caught:
            client.infer("moce", [tensor])
        return str(caught.value)

    assert "expects 'UINT8'" in fails("IMAGE", np.zeros((1, 16, 16, 3), np.float32), "FP32")
    assert "unexpected shape" in fails("IMAGE", np.zeros((2, 16), np.uint8), "UINT8")
    assert "image is 4x4" in fails("IMAGE", np.zeros((1, 4, 4, 3), np.uint8), "UINT8")
    assert "expects 'UINT8'" in fails("IMAGE", np.array([[b"not an image"]], dtype=np.object_), "BYTES")
    assert "C = 1, 3 or 4" in fails("IMAGE", np.zeros((1, 16, 16, 7), np.uint8), "UINT8")
    client.close()
    assert _infer_http(server, np.zeros((1, 16, 16, 3), np.uint8))["RESTORED"].shape == (1, 16, 16, 3)


def test_eight_concurrent_clients_of_ten_requests_are_all_answered(server, tiny_pkg):
    rng = np.random.default_rng(12)
    images = [(rng.random((1, 32, 48, 3)) * 255).astype(np.uint8) for _ in range(80)]
    alone = [_infer_http(server, image) for image in images[:8]]

    def client(k: int) -> list[dict[str, np.ndarray]]:
        return [_infer_http(server, images[k * 10 + i]) for i in range(10)]

    with ThreadPoolExecutor(8) as pool:
        answers = [a for batch in pool.map(client, range(8)) for a in batch]
    assert len(answers) == 80
    for image, answer in zip(images, answers):
        assert answer["RESTORED"].shape == image.shape
    for i in range(8):
        # batched with other clients' images, ONNX Runtime may round a few pixels the other way
        diff = np.abs(answers[i]["RESTORED"].astype(int) - alone[i]["RESTORED"].astype(int))
        assert diff.max() <= 1 and np.array_equal(answers[i]["ROUTES"], alone[i]["ROUTES"])


def _serve_command(tiny_pkg, ports: Ports) -> list[str]:
    import sys

    return [
        sys.executable,
        "-c",
        "from moce.cli.main import main; main()",
        "serve",
        str(tiny_pkg.root),
        "--backend",
        "onnxruntime",
        "--http-port",
        str(ports.http),
        "--grpc-port",
        str(ports.grpc),
        "--metrics-port",
        str(ports.metrics),
    ]


def _holders(port: int) -> list[str]:
    """Processes whose command line names ``port`` (a tritonserver left behind)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "tritonserver" in text and f"--http-port={port}" in text:
            found.append(text)
    return found


@pytest.mark.slow
def test_sigterm_takes_the_whole_server_down_and_a_taken_port_is_refused_in_one_line(server, tiny_pkg):
    import signal
    import subprocess
    import time

    taken = subprocess.run(
        _serve_command(tiny_pkg, server.ports), capture_output=True, text=True, timeout=120, check=False
    )
    assert taken.returncode == 2 and "is in use" in taken.stderr and "serving" not in taken.stderr
    assert len(taken.stderr.strip().splitlines()) == 1

    ports = Ports.free()
    child = subprocess.Popen(_serve_command(tiny_pkg, ports), stderr=subprocess.PIPE, text=True)
    line = child.stderr.readline()
    assert "serving model" in line, line
    child.send_signal(signal.SIGTERM)
    child.communicate(timeout=120)
    assert child.returncode == 128 + signal.SIGTERM
    deadline = time.monotonic() + 10
    while _holders(ports.http) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _holders(ports.http) == []
