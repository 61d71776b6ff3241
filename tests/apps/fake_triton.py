"""A test double of the calls moce's Triton model makes to ``triton_python_backend_utils``.

Only what :class:`moce.apps.triton.TritonModel` uses: input lookup, DLPack tensors, responses
and errors. The real module exists only inside a running Triton server; tests/apps/test_triton_server.py
checks the same model there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


class Tensor:
    def __init__(self, name: str, array: np.ndarray) -> None:
        self.name, self.array = name, array

    @staticmethod
    def from_dlpack(name: str, value: Any) -> Tensor:
        return Tensor(name, np.from_dlpack(value).copy())

    def __dlpack__(self, stream: Any = None, **kwargs: Any) -> Any:
        return self.array.__dlpack__()

    def __dlpack_device__(self) -> tuple[int, int]:
        return self.array.__dlpack_device__()


class TritonError(Exception):
    INVALID_ARG = 3

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code

    def message(self) -> str:
        return str(self)


@dataclass
class InferenceRequest:
    inputs: dict[str, np.ndarray]
    requested: list[str] = field(default_factory=list)
    id: str = ""

    def request_id(self) -> str:
        return self.id

    def requested_output_names(self) -> list[str]:
        return self.requested


@dataclass
class InferenceResponse:
    output_tensors: list[Tensor]
    error: TritonError | None = None

    def output(self, name: str) -> np.ndarray:
        return next(t.array for t in self.output_tensors if t.name == name)


def get_input_tensor_by_name(request: InferenceRequest, name: str) -> Tensor | None:
    return Tensor(name, request.inputs[name]) if name in request.inputs else None
