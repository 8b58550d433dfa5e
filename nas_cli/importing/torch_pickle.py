"""Reads a PyTorch ``.pth`` checkpoint into numpy arrays, without torch.

``torch.save``'s format since PyTorch 1.6 is a zip holding ``<name>/data.pkl`` (a pickle of the
saved object, whose tensors refer to storages by key) and one raw little-endian file per storage,
``<name>/data/<key>``. The legacy format before it (Once-for-All's published checkpoints may be in
it) is a stream: a magic-number pickle, a protocol pickle, a system-info pickle, the object's pickle,
a pickle listing the storage keys, then each storage as an int64 element count and its raw bytes
(:func:`_read_legacy`). Unpickling
arbitrary data runs arbitrary code, so :class:`_Restricted` resolves only the names that tensor
rebuilding needs (``torch._utils._rebuild_tensor_v2`` / ``_rebuild_parameter``,
``collections.OrderedDict``, the ``torch.*Storage`` types, each implemented here) and refuses every
other class with one line naming it. Nothing from torch is imported or called.
"""

from __future__ import annotations

import collections
import io
import pickle
import zipfile
from pathlib import Path

import numpy as np

from nas_cli.errors import UserError

#: the storage types a tensor may be rebuilt from, and their numpy dtypes
STORAGE_DTYPES = {
    "DoubleStorage": np.float64, "FloatStorage": np.float32, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16, "CharStorage": np.int8,
    "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


class _StorageType:
    """What ``torch.FloatStorage`` (etc.) names in the pickle: just its dtype."""

    def __init__(self, name: str):
        self.name, self.dtype = name, np.dtype(STORAGE_DTYPES[name])


class _Storage:
    """One storage: its flat array, read from the zip when a tensor first needs it."""

    def __init__(self, array: np.ndarray):
        self.array = array


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                       metadata=None):
    """torch._utils._rebuild_tensor_v2: a strided view of the storage, copied into its own array."""
    if not isinstance(storage, _Storage):
        raise pickle.UnpicklingError("a tensor without a storage")
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    flat = storage.array
    itemsize = flat.dtype.itemsize
    if size:
        last = int(storage_offset) + sum((n - 1) * s for n, s in zip(size, stride)) if all(size) else 0
        if last >= len(flat) or min(stride, default=0) < 0:
            raise pickle.UnpicklingError(f"a tensor of shape {size} reaches past its storage of {len(flat)} items")
    elif int(storage_offset) >= len(flat):
        raise pickle.UnpicklingError("a scalar tensor past its storage")
    view = np.lib.stride_tricks.as_strided(flat[int(storage_offset):], shape=size,
                                           strides=tuple(s * itemsize for s in stride), writeable=False)
    return np.array(view)  # (size) contiguous copy


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    """torch._utils._rebuild_parameter: an ``nn.Parameter`` is its tensor here."""
    return data


#: every global the pickle may name, and what stands in for it
_ALLOWED = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("collections", "OrderedDict"): collections.OrderedDict,
    **{("torch", name): _StorageType(name) for name in STORAGE_DTYPES},
}


class _Restricted(pickle.Unpickler):
    def __init__(self, data, storage_bytes):
        super().__init__(data if hasattr(data, "read") else io.BytesIO(data))
        self._storage_bytes = storage_bytes
        self._storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise _Refused(f"{module}.{name}") from None

    def persistent_load(self, pid):
        # ('storage', storage type, key, location, number of elements)
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType)):
            raise pickle.UnpicklingError(f"unknown persistent id {str(pid)[:80]}")
        _, kind, key, _location, numel = pid
        if key not in self._storages:
            raw = self._storage_bytes(str(key))
            count = len(raw) // kind.dtype.itemsize
            if count < int(numel):
                raise pickle.UnpicklingError(f"storage {key} holds {count} items, the pickle says {numel}")
            self._storages[key] = _Storage(np.frombuffer(raw, kind.dtype.newbyteorder("<"), count=int(numel)))
        return self._storages[key]


class _Refused(pickle.UnpicklingError):
    """The pickle names a global that is not tensor rebuilding."""


def read_pth(path: str | Path) -> dict:
    """The object ``torch.save`` wrote to ``path``, with every tensor a numpy array.

    Raises:
      UserError: the file is missing, no zip (the legacy pre-1.6 format included), lacks
        ``data.pkl``, is big-endian or damaged, or its pickle names a class other than tensor
        rebuilding (the line names the class).
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist")
    try:
        if not zipfile.is_zipfile(path):
            return _read_legacy(path)
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
            pkl = [n for n in names if n == "data.pkl" or n.endswith("/data.pkl")]
            if len(pkl) != 1:
                raise UserError(f"checkpoint {path} is a zip without one data.pkl ({len(names)} entries); "
                                "it was not written by torch.save")
            prefix = pkl[0][: -len("data.pkl")]
            order = z.read(prefix + "byteorder").decode().strip() if prefix + "byteorder" in names else "little"
            if order != "little":
                raise UserError(f"checkpoint {path} was written on a {order}-endian machine; only little-endian "
                                "checkpoints are read")

            def storage_bytes(key: str) -> bytes:
                name = f"{prefix}data/{key}"
                if name not in names:
                    raise pickle.UnpicklingError(f"missing storage {name}")
                return z.read(name)

            return _Restricted(z.read(pkl[0]), storage_bytes).load()
    except _Refused as e:
        raise UserError(f"checkpoint {path} names the class {e}, which is not tensor data; refusing to load it "
                        "(only tensors, dicts and lists are read)") from None
    except UserError:  # already the one line (a UserError is a ValueError too: the errors' root is one)
        raise
    except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, ValueError, TypeError, KeyError,
            IndexError, AttributeError, UnicodeDecodeError) as e:
        raise UserError(f"checkpoint {path} is damaged ({type(e).__name__}: {str(e)[:120]})") from None


#: the first pickle of a legacy (pre-1.6) torch.save file
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


class _LegacyTensor:
    """A tensor of a legacy file, whose storage bytes follow the pickle: rebuilt afterwards."""

    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride


class _LegacyStorage:
    def __init__(self, key: str, dtype: np.dtype, numel: int):
        self.key, self.dtype, self.numel = key, dtype, numel


class _LegacyUnpickler(_Restricted):
    """The object pickle of a legacy file: storages are placeholders until their bytes are read."""

    def __init__(self, f):
        super().__init__(f, None)
        self.storages: dict[str, _LegacyStorage] = {}

    def find_class(self, module: str, name: str):
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return lambda storage, offset, size, stride, *rest: _LegacyTensor(storage, offset, size, stride)
        return super().find_class(module, name)

    def persistent_load(self, pid):
        # ('storage', storage type, root key, location, number of elements, view metadata)
        if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType)):
            raise pickle.UnpicklingError(f"unknown persistent id {str(pid)[:80]}")
        _, kind, key, _location, numel, view = pid
        if view is not None:
            raise pickle.UnpicklingError("storage views of the legacy format are not read")
        return self.storages.setdefault(str(key), _LegacyStorage(str(key), kind.dtype, int(numel)))


def _no_globals(f):
    """A pickle of plain values (the legacy header): any global refused."""
    return _Restricted(f, None)


def _resolve(obj, arrays: dict):
    if isinstance(obj, _LegacyTensor):
        return _rebuild_tensor_v2(_Storage(arrays[obj.storage.key]), obj.offset, obj.size, obj.stride)
    if isinstance(obj, dict):
        return type(obj)((k, _resolve(v, arrays)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_resolve(v, arrays) for v in obj)
    return obj


def _read_legacy(path: Path):
    """A legacy (pre-1.6) torch.save file; UserError when it is none."""
    with open(path, "rb") as f:
        try:
            magic = _no_globals(f).load()
        except Exception:  # noqa: BLE001 - whatever the bytes are, the answer is "not a checkpoint"
            magic = None
        if magic != LEGACY_MAGIC:
            raise UserError(f"checkpoint {path} is not a PyTorch checkpoint (neither torch.save's zip format "
                            "nor its legacy format)")
        _no_globals(f).load()  # protocol version
        info = _no_globals(f).load()
        if not isinstance(info, dict) or not info.get("little_endian", False):
            raise UserError(f"checkpoint {path} was written on a big-endian machine; only little-endian "
                            "checkpoints are read")
        unpickler = _LegacyUnpickler(f)
        obj = unpickler.load()
        keys = _no_globals(f).load()
        arrays = {}
        for key in keys:
            head = f.read(8)
            if len(head) != 8:
                raise pickle.UnpicklingError(f"storage {key} is cut off")
            numel = int(np.frombuffer(head, "<i8")[0])
            st = unpickler.storages.get(str(key))
            if st is None or numel != st.numel:
                raise pickle.UnpicklingError(f"storage {key}: {numel} items where the pickle says "
                                             f"{None if st is None else st.numel}")
            raw = f.read(numel * st.dtype.itemsize)
            if len(raw) != numel * st.dtype.itemsize:
                raise pickle.UnpicklingError(f"storage {key} is cut off")
            arrays[str(key)] = np.frombuffer(raw, st.dtype.newbyteorder("<"))
        missing = set(unpickler.storages) - set(arrays)
        if missing:
            raise pickle.UnpicklingError(f"storage {sorted(missing)[0]} is missing")
        return _resolve(obj, arrays)
