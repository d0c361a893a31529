"""JAX: immutable arrays, and float64 only in 64-bit mode."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import array_api_compat
import numpy as np

from ..errors import BackendUnavailableError, XbpValueError
from . import MIXED_PRECISIONS, Library, gpu_index


def _x64() -> bool:
    import jax

    return bool(jax.config.read("jax_enable_x64"))


class JaxLibrary(Library):
    """``jax.numpy`` on one JAX device; arrays are immutable, so updates rebind."""

    name = "jax"
    module = "jax"
    extra = "jax"
    mutable_arrays = False

    def asarray(self, xp: Any, data: Any, dtype: Any, device: Any, copy: bool) -> Any:
        import jax

        if isinstance(data, np.ndarray):
            # host data: one device_put (jnp.asarray(..., device=) dispatches a conversion
            # with a sharding constraint, ~10x the host time for the small per-epoch
            # arrays). The CPU client may keep using the host buffer instead of copying
            # it (even with may_alias=False), so it gets a private copy nobody writes to.
            host = np.array(data, dtype=None if dtype is None else np.dtype(dtype), copy=True)
            return jax.device_put(host, device)
        return super().asarray(xp, data, dtype, device, copy)

    def jit_input(self, xp: Any, data: np.ndarray, dtype: Any, device: Any) -> Any:
        # a jitted call moves host arguments to its committed device in its C++ path:
        # 10 us against 30 us per device_put (the per-epoch permutation and scalars).
        # A private copy: the call may read the host buffer while it runs
        return np.array(data, dtype=None if dtype is None else np.dtype(dtype), copy=True)

    def namespace(self) -> Any:
        # jax.numpy implements the array API itself; array_api_compat has no wrapper for it
        self.load()
        return importlib.import_module("jax.numpy")

    def note(self) -> str | None:
        if _x64():
            return None
        return "usable in float32; float64 needs jax.config.update('jax_enable_x64', True)"

    def devices(self) -> list[str]:
        import jax

        return [str(d) for d in jax.devices()]

    def gpu_count(self) -> int:
        try:
            import jax

            return len(jax.devices("gpu"))
        except (ImportError, RuntimeError):  # RuntimeError: no GPU platform in this jaxlib
            return 0

    def enable_float64(self) -> None:
        try:
            import jax
        except ImportError:
            return  # resolving the backend says how to install it
        jax.config.update("jax_enable_x64", True)

    def float64_scope(self) -> Any:
        import jax

        # 64-bit mode for the calls inside the context only (thread-local in JAX); arrays
        # made inside keep their dtype, so everything that reads them enters it too
        return jax.enable_x64(True)

    def compiler(self, device: Any) -> str | None:
        return "trace"  # jax.jit + lax.scan over the epoch

    def precision_scope(self, policy: str, device: Any) -> Any:
        import jax

        if policy == "exact" or policy in MIXED_PRECISIONS:
            # JAX's default float32 matmul on NVIDIA GPUs is TF32: scope "highest" to
            # xbp's own calls, leaving the user's global setting alone
            return jax.default_matmul_precision("highest")
        if device.platform != "gpu":
            return super().precision_scope(policy, device)
        return jax.default_matmul_precision("tensorfloat32")

    def mixed_dtype(self, policy: str, device: Any) -> Any:
        import jax.numpy as jnp

        return {"bf16": jnp.bfloat16, "fp16": jnp.float16}[policy]

    def jit(self, fn: Callable[..., Any], donate_argnums: tuple[int, ...], device: Any) -> Any:
        import jax

        # the CPU client cannot reuse donated buffers (and warns): donate on accelerators only
        donate = donate_argnums if device.platform != "cpu" else ()
        return jax.jit(fn, donate_argnums=donate)

    def scan(self, body: Callable[[Any, Any], tuple[Any, Any]], carry: Any, xs: Any) -> Any:
        import jax

        return jax.lax.scan(body, carry, xs)

    def owns_namespace(self, xp: Any) -> bool:
        return bool(array_api_compat.is_jax_namespace(xp))

    def resolve_device(self, spec: Any) -> Any:
        import jax

        if spec is None:
            return jax.devices()[0]
        if isinstance(spec, jax.Device):
            return spec
        text = str(spec)
        if text == "cpu":
            return jax.devices("cpu")[0]
        if text.startswith("cpu:") and text[4:].isdigit():  # str() of a CPU device, as saved
            cpus = jax.devices("cpu")
            if int(text[4:]) >= len(cpus):
                raise XbpValueError(
                    f"device={spec!r}: jax sees {len(cpus)} CPU device(s); use device='cpu'"
                )
            return cpus[int(text[4:])]
        index = gpu_index(spec, self.name)
        try:
            gpus = jax.devices("gpu")
        except RuntimeError as exc:
            raise BackendUnavailableError(
                f"device={spec!r}: jax has no GPU here ({exc}); use device='cpu'"
            ) from None
        if index >= len(gpus):
            raise XbpValueError(
                f"device={spec!r}: jax sees {len(gpus)} GPU(s); use an index below {len(gpus)}"
            )
        return gpus[index]

    def check_dtype(self, dname: str, device: Any, argument: str, owner: object) -> None:
        if dname == "float64" and not _x64():
            raise XbpValueError(
                f"{argument}='float64' on the jax backend needs 64-bit mode, which is off "
                "(jax would silently compute in float32); enable it first with "
                "jax.config.update('jax_enable_x64', True) or JAX_ENABLE_X64=1, "
                "or use dtype='float32'"
            )


LIBRARY = JaxLibrary()
