"""Turning caller arrays into DLPack capsules the compiled core reads in place.

Any object with `__dlpack__` works (numpy, torch on CPU or CUDA, CuPy, JAX...).
onnxruntime OrtValues are wrapped by pointer, still without a copy. Nothing here
imports a deep-learning framework.
"""
from __future__ import annotations

import numpy as np

from . import _core
from ._score_inputs import ArraySpec

_DL_CPU, _DL_CUDA = 1, 2
_ORT_DTYPES = {  # onnxruntime element type -> (DLPack type code, bits)
    "tensor(float)": (2, 32),
    "tensor(float16)": (2, 16),
    "tensor(bfloat16)": (4, 16),
    "tensor(uint8)": (1, 8),
    "tensor(bool)": (6, 8),
    "tensor(double)": (2, 64),
    "tensor(int64)": (0, 64),
    "tensor(int32)": (0, 32),
}


class BorrowedArray:
    """A DLPack view of memory another object owns; keeps that owner alive."""

    def __init__(self, owner, data_ptr: int, shape, dtype: tuple[int, int], device: tuple[int, int], strides=None):
        self._owner = owner
        self._data_ptr = int(data_ptr)
        self.shape = tuple(int(s) for s in shape)
        self._strides = None if strides is None else [int(s) for s in strides]
        self._dtype = dtype
        self._device = device

    def __dlpack_device__(self):
        return self._device

    def __dlpack__(self, stream=None, **_):
        return _core.borrow(self._owner, self._data_ptr, list(self.shape), self._strides, *self._dtype, *self._device)


def _from_ortvalue(value, name: str) -> BorrowedArray:
    element = value.data_type()  # e.g. "tensor(float)"; element_type() is an ONNX enum number
    if element not in _ORT_DTYPES:
        raise TypeError(f"{name} is an OrtValue of unsupported type {element}")
    device_name = value.device_name().lower()
    if device_name == "cpu":
        device = (_DL_CPU, 0)
    elif device_name == "cuda":
        device_id = 0
        try:
            device_id = int(value._ortvalue.device().device_id())  # not exposed by every onnxruntime version
        except Exception:
            pass
        device = (_DL_CUDA, device_id)
    else:
        raise ValueError(f"{name} is an OrtValue on unsupported device {device_name!r}; egal scores on cpu or cuda")
    return BorrowedArray(value, value.data_ptr(), value.shape(), _ORT_DTYPES[element], device)


def _is_ortvalue(x) -> bool:
    return type(x).__name__ == "OrtValue" and hasattr(x, "data_ptr") and hasattr(x, "device_name")


def as_dlpack_producer(x, name: str):
    """Something with __dlpack__ for `x`, without copying array data (but numpy arrays in a non-native byte
    order, copied to native order)."""
    if getattr(x, "requires_grad", False) and hasattr(x, "detach"):
        x = x.detach()  # autograd tensors refuse DLPack export; detaching shares storage
    if callable(getattr(x, "is_neg", None)) and x.is_neg():
        # torch's lazy negation (x.conj().imag, ...) is a bit on the tensor, not in its memory, and DLPack carries
        # no such bit: the values are materialised (a copy) rather than read with their sign lost.
        x = x.resolve_neg()
    if _is_ortvalue(x):
        return _from_ortvalue(x, name)
    if isinstance(x, np.ndarray) and not x.dtype.isnative:
        # DLPack has no byte order: big-endian data (a .npy written elsewhere, opened with mmap) is read as
        # native numbers once copied, never reinterpreted in place.
        x = x.astype(x.dtype.newbyteorder("="))
    if isinstance(x, np.ndarray) and not x.flags.writeable:
        # Legacy DLPack cannot flag read-only memory, so numpy refuses to export it;
        # the core never writes inputs, so lend it by pointer instead.
        if any(s % x.itemsize for s in x.strides):
            x = np.ascontiguousarray(x)
        else:
            code_bits = _NUMPY_DTYPES.get(x.dtype.str[1:])
            if code_bits is None:
                raise TypeError(f"{name} has unsupported dtype {x.dtype}")
            return BorrowedArray(x, x.ctypes.data, x.shape, code_bits, (_DL_CPU, 0),
                                 strides=[s // x.itemsize for s in x.strides])
    if hasattr(x, "__dlpack__") and hasattr(x, "__dlpack_device__"):
        return x
    if isinstance(x, (list, tuple)):
        return np.asarray(x)
    raise TypeError(
        f"{name} must be an array (numpy, torch, an onnxruntime OrtValue, or any DLPack producer), "
        f"got {type(x).__name__}"
    )


_NUMPY_DTYPES = {"f4": (2, 32), "f2": (2, 16), "u1": (1, 8), "b1": (6, 8), "f8": (2, 64), "i8": (0, 64), "i4": (0, 32)}


def capsule(x, name: str):
    """(capsule, ArraySpec) for `x`, or (None, None) for None."""
    if x is None:
        return None, None
    producer = as_dlpack_producer(x, name)
    try:
        device_type, _ = producer.__dlpack_device__()
        # CUDA: ask for the legacy default stream, which the CUDA backend runs on.
        cap = producer.__dlpack__(stream=1) if int(device_type) == _DL_CUDA else producer.__dlpack__()
        if type(cap).__name__ != "PyCapsule":
            raise TypeError(f"__dlpack__ returned a {type(cap).__name__}, not a DLPack capsule")
        shape, dtype, device, device_id = _core.describe(cap, name)
    except Exception as exc:
        raise TypeError(f"{name} could not be exported through DLPack: {exc}") from exc
    return cap, ArraySpec(tuple(shape), dtype, (device, int(device_id)))

