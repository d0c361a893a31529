"""CuPy: CUDA GPUs only; refuses the CPU and says why CUDA is unusable."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import array_api_compat
import numpy as np

from ..errors import BackendUnavailableError, XbpValueError
from . import Library, gpu_index


class CupyLibrary(Library):
    _side_streams: ClassVar[
        dict[int, Any]
    ] = {}  # per CUDA device: the stream batches are copied on
    """CuPy on one CUDA device; a CUDA-aware MPI may read its buffers directly."""

    name = "cupy"
    module = "cupy"
    extra = "cuda12"

    def unusable_reason(self) -> str | None:
        """Why CuPy cannot run here, or None when a CUDA device works."""
        try:
            import cupy

            if cupy.cuda.runtime.getDeviceCount() < 1:
                return "cupy is installed but no CUDA device is usable: no device found"
            cupy.zeros(1).sum().get()
        except Exception as exc:  # CUDA reports driver problems in several types
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            return f"cupy is installed but no CUDA device is usable: {msg}"
        return None

    def devices(self) -> list[str]:
        return [f"cuda:{i}" for i in range(self.gpu_count())]

    def gpu_count(self) -> int:
        try:
            if self.unusable_reason() is not None:
                return 0
            import cupy

            return int(cupy.cuda.runtime.getDeviceCount())
        except ImportError:
            return 0

    def mixed_dtype(self, policy: str, device: Any) -> Any:
        if policy != "fp16":  # CuPy has float16 but no bfloat16
            return super().mixed_dtype(policy, device)
        import cupy

        return cupy.float16

    def local_device(self, local_rank: int) -> Any:
        count = self.gpu_count()
        return None if count == 0 else local_rank % count

    def mpi_device_buffers(self, cuda_aware: bool) -> bool:
        return cuda_aware

    def owns_namespace(self, xp: Any) -> bool:
        return bool(array_api_compat.is_cupy_namespace(xp))

    def resolve_device(self, spec: Any) -> Any:
        import cupy

        if spec is not None and str(spec) == "cpu":
            raise XbpValueError(
                "device='cpu': cupy runs on CUDA GPUs only; use backend='numpy' for the CPU"
            )
        problem = self.unusable_reason()
        if problem:
            raise BackendUnavailableError(problem)
        if isinstance(spec, cupy.cuda.Device):
            return spec
        index = 0 if spec is None else gpu_index(spec, self.name)
        count = cupy.cuda.runtime.getDeviceCount()
        if index >= count:
            raise XbpValueError(
                f"device={spec!r}: cupy sees {count} CUDA device(s); use an index below {count}"
            )
        return cupy.cuda.Device(index)

    def asarray(self, xp: Any, data: Any, dtype: Any, device: Any, copy: bool) -> Any:
        # CuPy's asarray takes no device argument: the current device decides
        with device:
            out = xp.asarray(data, dtype=dtype)
            return out.copy() if copy and out is data else out

    def copy_in(self, xp: Any, host: np.ndarray, dtype: Any, device: Any) -> Callable[[], Any]:
        import cupy

        with device:
            side = self._side_streams.get(device.id)
            if side is None:
                side = self._side_streams[device.id] = cupy.cuda.Stream(non_blocking=True)
            # pinned host memory and a side stream: the copy runs beside the compute stream
            memory = cupy.cuda.alloc_pinned_memory(host.nbytes)
            pinned = np.frombuffer(memory, host.dtype, host.size).reshape(host.shape)
            pinned[...] = host
            out = cupy.empty(host.shape, dtype=dtype)
            out.set(pinned, stream=side)
            done = side.record()

        def ready(keep: Any = memory) -> Any:  # keep: the pinned buffer outlives the copy
            cupy.cuda.get_current_stream().wait_event(done)
            return out

        return ready

    def to_host(self, a: Any) -> np.ndarray:
        return a.get()  # type: ignore[no-any-return]

    def sync(self, device: Any) -> None:
        import cupy

        cupy.cuda.Stream.null.synchronize()


LIBRARY = CupyLibrary()
