"""PyTorch: CPU and CUDA devices, named the torch way (``torch.device``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import array_api_compat
import numpy as np

from ..errors import BackendUnavailableError, XbpValueError
from . import Library, extended_namespace, gpu_index


class TorchLibrary(Library):
    _side_streams: ClassVar[
        dict[Any, Any]
    ] = {}  # per CUDA device: the stream batches are copied on
    """PyTorch tensors on the CPU or one CUDA device."""

    name = "torch"
    module = "torch"
    extra = "torch"

    def asarray(self, xp: Any, data: Any, dtype: Any, device: Any, copy: bool) -> Any:
        if isinstance(data, np.ndarray) and not data.flags.writeable:
            # torch cannot wrap read-only memory (pandas' values, memory maps opened
            # read-only) without a warning and a tensor that must never be written: a
            # private copy is what torch's own warning asks for
            data = np.array(data, copy=True)
            copy = False
        return super().asarray(xp, data, dtype, device, copy)

    def devices(self) -> list[str]:
        return ["cpu"] + [f"cuda:{i}" for i in range(self.gpu_count())]

    def gpu_count(self) -> int:
        try:
            import torch
        except ImportError:
            return 0
        return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0

    def local_device(self, local_rank: int) -> Any:
        count = self.gpu_count()
        # torch also runs on the CPU: a rank without a GPU says so explicitly
        return "cpu" if count == 0 else f"cuda:{local_rank % count}"

    def set_cpu_threads(self, threads: int) -> None:
        import torch

        torch.set_num_threads(threads)

    def compiler(self, device: Any) -> str | None:
        # CUDA graphs replay a captured step; on the CPU there is nothing to capture
        return "capture" if device.type == "cuda" else None

    def precision_scope(self, policy: str, device: Any) -> Any:
        if device.type != "cuda":
            return super().precision_scope(policy, device)
        return _TorchMatmulScope(allow_tf32=policy == "tf32")

    def mixed_dtype(self, policy: str, device: Any) -> Any:
        import torch

        # both types on the CPU and on CUDA: products accumulate in float32 inside the GEMM
        return {"bf16": torch.bfloat16, "fp16": torch.float16}[policy]

    def capture(self, step: Callable[[], Any], device: Any) -> tuple[Callable[[], None], Any]:
        import torch

        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(2):  # warm-up on a side stream, as capture requires
                step()
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            outputs = step()
        return graph.replay, outputs

    def kernel_namespace(self, xp: Any) -> Any:
        # torch's CPU tanh is several times slower than its sigmoid (332 vs 54 us on
        # 256x512 float32, one thread): the sigmoid activation takes torch's own
        import torch

        return extended_namespace(xp, logistic=torch.sigmoid)

    def owns_namespace(self, xp: Any) -> bool:
        return bool(array_api_compat.is_torch_namespace(xp))

    def resolve_device(self, spec: Any) -> Any:
        import torch

        if isinstance(spec, torch.device):
            dev = spec
        elif spec is None or str(spec) == "cpu":
            dev = torch.device("cpu")
        else:
            dev = torch.device("cuda", gpu_index(spec, self.name))
        if dev.type == "cuda":
            if not torch.cuda.is_available():
                raise BackendUnavailableError(
                    f"device={spec!r}: torch is installed but CUDA is not available "
                    "(CPU build or no driver); use device='cpu'"
                )
            index = 0 if dev.index is None else dev.index
            count = torch.cuda.device_count()
            if index >= count:
                raise XbpValueError(
                    f"device={spec!r}: torch sees {count} CUDA device(s); "
                    f"use an index below {count}"
                )
            dev = torch.device("cuda", index)
        return dev

    def copy_in(self, xp: Any, host: np.ndarray, dtype: Any, device: Any) -> Callable[[], Any]:
        if device.type != "cuda":
            return super().copy_in(xp, host, dtype, device)
        import torch

        # pinned host memory and a side stream: the copy runs beside the compute stream
        pinned = torch.from_numpy(np.ascontiguousarray(host)).pin_memory()
        side = self._side_streams.get(device)
        if side is None:
            side = self._side_streams[device] = torch.cuda.Stream(device)
        with torch.cuda.stream(side):
            out = pinned.to(device=device, dtype=dtype, non_blocking=True)
            done = torch.cuda.Event()
            done.record(side)

        def ready(keep: Any = pinned) -> Any:  # keep: the pinned buffer outlives the copy
            current = torch.cuda.current_stream(device)
            current.wait_event(done)
            out.record_stream(current)  # the allocator must not reuse it early
            return out

        return ready

    def detach(self, a: Any) -> Any:
        # a view without autograd history: no copy, and the weights stay plain tensors
        return a.detach() if a.requires_grad else a

    def to_host(self, a: Any) -> np.ndarray:
        return a.detach().cpu().numpy()  # type: ignore[no-any-return]

    def sync(self, device: Any) -> None:
        if device.type == "cuda":
            import torch

            torch.cuda.synchronize(device)


LIBRARY = TorchLibrary()


class _TorchMatmulScope:
    """Sets torch's global TF32 switch for CUDA matmuls inside xbp's own calls and puts
    the user's setting back after, so xbp's products never depend on it."""

    def __init__(self, allow_tf32: bool) -> None:
        self.allow = allow_tf32
        self.saved: bool | None = None

    def __enter__(self) -> None:
        import torch

        flags = torch.backends.cuda.matmul
        self.saved = flags.allow_tf32
        flags.allow_tf32 = self.allow

    def __exit__(self, *exc: object) -> None:
        import torch

        torch.backends.cuda.matmul.allow_tf32 = bool(self.saved)
