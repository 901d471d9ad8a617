"""One row through a LightGBM booster, the way a service scores: set up once, then a
single call into the library per row.

``Booster.predict`` builds a predictor from its parameters on every call: for one row of
a few hundred trees, that set-up costs three times the trees themselves. LightGBM's C API
keeps the set-up (``LGBM_BoosterPredictForMatSingleRowFastInit``) and scores a row with
one call (``LGBM_BoosterPredictForMatSingleRowFast``); the answers are the same numbers
``Booster.predict`` gives, on one thread. LightGBM guards the cached predictor with its own
lock, so one ``SingleRow`` serves every thread; the call releases the GIL.
"""

from __future__ import annotations

import ctypes
import threading
import weakref
from typing import Any

import lightgbm
import numpy as np

# Private names, but the library and the error check LightGBM's own package uses: the
# single-row API has no Python wrapper.
from lightgbm.basic import _LIB, _safe_call  # type: ignore[attr-defined]

__all__ = ["CONTRIBUTIONS", "RAW_SCORE", "SingleRow"]

RAW_SCORE = 1  # C_API_PREDICT_RAW_SCORE: the margin
CONTRIBUTIONS = 3  # C_API_PREDICT_CONTRIB: each feature's SHAP value, then the bias
_FLOAT64 = 1  # C_API_DTYPE_FLOAT64


class SingleRow:
    """``booster``'s prediction of kind ``RAW_SCORE`` or ``CONTRIBUTIONS`` for one row."""

    def __init__(self, booster: lightgbm.Booster, kind: int) -> None:
        self.booster = booster
        self.kind = kind
        self._columns = booster.num_feature()
        self._width = self._columns + 1 if kind == CONTRIBUTIONS else 1
        self._handle: ctypes.c_void_p | None = None
        self._lock = threading.Lock()

    def predict(self, row: np.ndarray) -> np.ndarray:
        """The prediction for ``row``, a C-contiguous float64 array of the booster's
        features (1 x n or n)."""
        if row.dtype != np.float64 or row.size != self._columns or not row.flags.c_contiguous:
            raise ValueError(
                f"one row of {self._columns} float64 features expected, got {row.dtype} "
                f"of shape {row.shape}"
            )
        out = np.empty(self._width)
        written = ctypes.c_int64()
        _safe_call(
            _LIB.LGBM_BoosterPredictForMatSingleRowFast(
                self._set_up(),
                row.ctypes.data_as(ctypes.c_void_p),
                ctypes.byref(written),
                out.ctypes.data_as(ctypes.POINTER(ctypes.c_double)),
            )
        )
        return out

    def _set_up(self) -> ctypes.c_void_p:
        # Made at the first row, not with the bundle: many bundles are loaded and never
        # score one row.
        if self._handle is None:
            with self._lock:
                if self._handle is None:
                    handle = ctypes.c_void_p()
                    _safe_call(
                        _LIB.LGBM_BoosterPredictForMatSingleRowFastInit(
                            self.booster._handle,
                            ctypes.c_int(self.kind),
                            ctypes.c_int(0),  # from the first iteration
                            ctypes.c_int(-1),  # to the last, as Booster.predict on a loaded model
                            ctypes.c_int(_FLOAT64),
                            ctypes.c_int32(self._columns),
                            # One row's work is far less than a thread pool's start.
                            ctypes.c_char_p(b"num_threads=1"),
                            ctypes.byref(handle),
                        )
                    )
                    weakref.finalize(self, _LIB.LGBM_FastConfigFree, handle)
                    self._handle = handle
        return self._handle

    def __reduce__(self) -> tuple[Any, ...]:
        # The library's handle is not data: a copy sets up its own.
        return SingleRow, (self.booster, self.kind)
