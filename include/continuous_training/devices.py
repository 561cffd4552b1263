"""Which device XGBoost trains on: ``cuda`` when the build has CUDA and the driver reports a device.

No torch or cupy needed: the CUDA driver is asked directly through ``libcuda``. Nothing here
initialises a CUDA context in a process that forks afterwards (CUDA does not survive ``fork``).
"""

from __future__ import annotations

import ctypes
import os
from typing import Any


def cuda_device_count() -> tuple[int, str]:
    """How many CUDA devices the driver reports, and how we know (no torch/cupy needed)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return 0, "CUDA_VISIBLE_DEVICES hides every device"
    try:
        libcuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return 0, "no CUDA driver (libcuda.so.1 not found)"
    if libcuda.cuInit(0) != 0:
        return 0, "CUDA driver present but cuInit failed"
    count = ctypes.c_int(0)
    if libcuda.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return 0, "cuDeviceGetCount failed"
    return count.value, f"CUDA driver reports {count.value} device(s)"


def select_device(probe: Any = cuda_device_count, xgboost_has_cuda: bool | None = None) -> tuple[str, str]:
    """``("cuda", why)`` when xgboost is built with CUDA and a device is visible, else ``("cpu", why)``."""
    if xgboost_has_cuda is None:
        import xgboost as xgb

        xgboost_has_cuda = bool(xgb.build_info().get("USE_CUDA"))
    if not xgboost_has_cuda:
        return "cpu", "this xgboost build has no CUDA support"
    count, why = probe()
    return ("cuda", why) if count > 0 else ("cpu", why)
