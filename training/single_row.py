"""LightGBM's single-row fast path, for the API's one-user requests.

``Booster.predict`` re-validates its input, builds a fresh predictor and copies the result through
several numpy arrays on every call: for one row that bookkeeping costs more than the trees. LightGBM's
C API keeps a prepared single-row predictor instead (``LGBM_BoosterPredictForMatSingleRowFastInit``,
then ``…SingleRowFast`` per row): the same trees, the same TreeSHAP, the same doubles. The Python
package does not wrap it, so this module is the one place that calls it, through the library handle
the package has already loaded.

The predictor is thread-safe (LightGBM locks it per call) and ctypes releases the GIL during the
call, so a worker thread scoring one row does not stall the event loop.
"""

from __future__ import annotations

import contextlib
import ctypes
from typing import Any

import numpy as np

# c_api.h
_PREDICT_CONTRIB = 3
_DTYPE_FLOAT64 = 1


class SingleRowContributions:
    """SHAP contributions (bias last) of one float64 row, as ``predict(pred_contrib=True)`` gives."""

    def __init__(self, booster: Any, n_features: int) -> None:
        from lightgbm.basic import _LIB, _c_str, _safe_call

        self._lib, self._safe_call = _LIB, _safe_call
        self._booster = booster  # the prepared predictor points into it: keep it alive
        self.n_features = n_features
        # what Booster.predict scores with by default: the best iteration when one is recorded
        best = int(getattr(booster, "best_iteration", 0) or 0)
        self._handle = ctypes.c_void_p()
        _safe_call(
            _LIB.LGBM_BoosterPredictForMatSingleRowFastInit(
                booster._handle,
                ctypes.c_int(_PREDICT_CONTRIB),
                ctypes.c_int(0),
                ctypes.c_int(best if best > 0 else -1),
                ctypes.c_int(_DTYPE_FLOAT64),
                ctypes.c_int32(n_features),
                _c_str("num_threads=1"),
                ctypes.byref(self._handle),
            )
        )

    def __call__(self, row: np.ndarray) -> np.ndarray:
        """``(n_features + 1,)`` contributions of one row (the last entry is the trees' bias)."""
        x = np.ascontiguousarray(row, dtype=np.float64).reshape(-1)
        if x.shape[0] != self.n_features:
            raise ValueError(f"expected {self.n_features} features, got {x.shape[0]}")
        out = np.empty(self.n_features + 1, dtype=np.float64)
        out_len = ctypes.c_int64(0)  # per call: concurrent callers must not share it
        self._safe_call(
            self._lib.LGBM_BoosterPredictForMatSingleRowFast(
                self._handle,
                x.ctypes.data_as(ctypes.c_void_p),
                ctypes.byref(out_len),
                out.ctypes.data_as(ctypes.POINTER(ctypes.c_double)),
            )
        )
        if out_len.value != out.shape[0]:
            raise RuntimeError(f"LightGBM returned {out_len.value} contributions, expected {out.shape[0]}")
        return out

    def close(self) -> None:
        handle, self._handle = self._handle, None
        if handle is not None and handle.value:
            self._safe_call(self._lib.LGBM_FastConfigFree(handle))

    def __del__(self) -> None:  # the model holder drops old versions on reload
        with contextlib.suppress(Exception):  # interpreter shutdown: the library may be gone already
            self.close()
