"""Read SMPL model files without running code from them.

SMPL ships as Python-2 pickles. Plain ``pickle.load`` (what smplx does) executes whatever the file
asks for, and the original release stores its arrays as chumpy objects, a package that no longer
installs. This module unpickles through an allow-list instead:

    * numpy arrays, dtypes and scalars;
    * scipy.sparse CSC/CSR/COO matrices, rebuilt from their stored arrays;
    * ``chumpy`` objects (``chumpy.ch.Ch`` and the other chumpy classes) as inert stand-ins whose
      pickled state holds the array in ``x`` (chumpy's ``__getstate__`` is its ``__dict__``);
    * plain containers (dict, list, tuple, set), Python-2 ``copy_reg._reconstructor`` and the
      ``_codecs.encode(text, 'latin1')`` that Python 3 uses for bytes at protocol 2.

Anything else (``os.system``, ``builtins.eval``, arbitrary classes) is refused with
:class:`~mocap.errors.MocapError` before it can run. ``.npz`` and ``.npy`` files are read with
``allow_pickle=False``.
"""

import functools
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse

from mocap.errors import MocapError
from mocap.npz import open_npz


class _Refused(pickle.UnpicklingError):
    """The file asks for something outside the allow-list."""


class _Inert:
    """Stand-in for a foreign class: accepts any constructor arguments, keeps the pickled state."""

    module = ""
    name = ""
    state: Any = None  # set by __setstate__ (pickle's BUILD); __init__ is not called on NEWOBJ

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args

    def __setstate__(self, state: Any) -> None:
        self.state = state


class _Chumpy(_Inert):
    """A chumpy object; ``state['x']`` is the array of a plain ``Ch``."""


class _Sparse(_Inert):
    """A scipy.sparse matrix; the state holds its data/indices/indptr (or row/col) and shape."""


def _inert_class(base: type[_Inert], module: str, name: str) -> type[_Inert]:
    return type(name, (base,), {"module": module, "name": name})


def _reconstructor(cls: Any, base: Any, state: Any) -> _Inert:
    """Safe ``copy_reg._reconstructor``: only ever builds the inert stand-ins."""
    if not (isinstance(cls, type) and issubclass(cls, _Inert)) or base is not object:
        raise _Refused(f"reconstructing {cls!r} from {base!r}")
    return cls()


def _latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
    """Python 3 writes ``bytes`` at protocol 2 as ``_codecs.encode(text, 'latin1')``."""
    if encoding not in ("latin1", "latin-1"):
        raise _Refused(f"codec {encoding!r}")
    return text.encode("latin1")


_NUMPY_FUNCS = {
    "_reconstruct": np.zeros(1).__reduce__()[0],  # numpy.core.multiarray._reconstruct
    "scalar": np.float64(0).__reduce__()[0],  # numpy.core.multiarray.scalar
    "_frombuffer": np.zeros(1).__reduce_ex__(5)[0],  # numpy.core.numeric._frombuffer (protocol 5)
}
_NUMPY_MODULES = (
    "numpy.core.multiarray",
    "numpy._core.multiarray",
    "numpy.core.numeric",
    "numpy._core.numeric",
)
_BUILTINS = {
    "object": object,
    "set": set,
    "frozenset": frozenset,
    "slice": slice,
    "complex": complex,
}
_SPARSE_NAMES = ("csc_matrix", "csr_matrix", "coo_matrix", "csc_array", "csr_array", "coo_array")


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only allow-listed globals (module docstring); everything else raises."""

    def find_class(self, module: str, name: str) -> Any:
        if module in _NUMPY_MODULES and name in _NUMPY_FUNCS:
            return _NUMPY_FUNCS[name]
        if module == "numpy" and name in ("ndarray", "dtype"):
            return getattr(np, name)
        if module == "_codecs" and name == "encode":
            return functools.partial(_latin1_bytes)  # fresh object: BUILD cannot alter ours
        if module in ("copy_reg", "copyreg") and name == "_reconstructor":
            return functools.partial(_reconstructor)
        if module in ("__builtin__", "builtins") and name in _BUILTINS:
            return _BUILTINS[name]
        if module == "chumpy" or module.startswith("chumpy."):
            return _inert_class(_Chumpy, module, name)
        if module.startswith("scipy.sparse") and name in _SPARSE_NAMES:
            return _inert_class(_Sparse, module, name)
        raise _Refused(f"{module}.{name}")


def _sparse_from_state(obj: _Sparse) -> scipy.sparse.spmatrix:
    state = obj.state
    if isinstance(state, tuple):  # (dict, slots) form of newer pickles
        state = {k: v for part in state if isinstance(part, dict) for k, v in part.items()}
    if not isinstance(state, dict):
        raise ValueError(f"unreadable {obj.name} state")
    shape = tuple(state.get("_shape") or state.get("shape") or ())
    kind = obj.name[:3]
    if kind == "coo":
        coords = state.get("coords") or (state["row"], state["col"])
        return scipy.sparse.coo_matrix((state["data"], tuple(coords)), shape=shape)
    build = scipy.sparse.csc_matrix if kind == "csc" else scipy.sparse.csr_matrix
    return build((state["data"], state["indices"], state["indptr"]), shape=shape)


def _convert(obj: Any, key: str = "") -> Any:
    """Replace inert stand-ins by numpy arrays / scipy matrices, recursively."""
    if isinstance(obj, _Chumpy):
        state = obj.state if isinstance(obj.state, dict) else {}
        if "x" not in state:
            raise MocapError(
                f"'{key}' is a chumpy expression ({obj.module}.{obj.name}) that cannot be evaluated "
                "without chumpy; use the SMPL file as released (its arrays are plain chumpy Ch) "
                "or convert it to .npz"
            )
        return np.asarray(_convert(state["x"], key))
    if isinstance(obj, _Sparse):
        return _sparse_from_state(obj)
    if isinstance(obj, dict):
        return {k: _convert(v, str(k)) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_convert(v, key) for v in obj)
    return obj


def safe_unpickle(path: Path) -> Any:
    """Unpickle ``path`` through the allow-list (latin1 for Python-2 files); no code runs.

    Raises:
        MocapError: the file is missing, corrupt, or asks for anything not allow-listed.
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            return _convert(_RestrictedUnpickler(fh, encoding="latin1").load())
    except MocapError:
        raise
    except FileNotFoundError as exc:
        raise MocapError(f"{path} does not exist; check the path") from exc
    except _Refused as exc:
        raise MocapError(
            f"{path} was refused: it asks for {exc}, but only numpy, scipy.sparse and chumpy data "
            "may be loaded; use the official file"
        ) from exc
    except Exception as exc:  # truncated or not a pickle at all
        raise MocapError(
            f"cannot read {path} ({type(exc).__name__}: {exc}); re-download the file"
        ) from exc


def _as_array(value: Any) -> np.ndarray | None:
    if scipy.sparse.issparse(value):
        return np.asarray(value.toarray())
    if isinstance(value, np.ndarray | str | bytes | int | float):
        return np.asarray(value)
    return None


def load_smpl_file(path: str | Path) -> dict[str, np.ndarray]:
    """Arrays of an SMPL-format model file (.pkl, original or cleaned, or .npz).

    Returns:
        key -> numpy array: ``v_template`` (6890,3), ``shapedirs`` (6890,3,S), ``posedirs``
        (6890,3,207), ``J_regressor`` (24,6890) dense, ``weights`` (6890,24), ``kintree_table``
        (2,24), ``f`` (13776,3), and any other array or string entry. Nested dicts are dropped.
    Raises:
        MocapError: unreadable, refused, or missing one of the keys above.
    """
    path = Path(path)
    if path.suffix == ".npz":
        try:
            with open_npz(path) as npz:
                data: dict[str, Any] = {k: npz[k] for k in npz.files}
        except FileNotFoundError as exc:
            raise MocapError(f"{path} does not exist; check the path") from exc
        except Exception as exc:
            raise MocapError(f"cannot read {path} ({exc}); re-download or re-convert it") from exc
    else:
        raw = safe_unpickle(path)
        if not isinstance(raw, dict):
            raise MocapError(f"{path} is not an SMPL model file (no key/array table inside)")
        data = raw
    arrays = {str(k): a for k, v in data.items() if (a := _as_array(v)) is not None}
    missing = [
        k
        for k in (
            "v_template",
            "shapedirs",
            "posedirs",
            "J_regressor",
            "weights",
            "kintree_table",
            "f",
        )
        if k not in arrays
    ]
    if missing:
        raise MocapError(f"{path} is not an SMPL model file (missing {', '.join(missing)})")
    return arrays


def load_regressor(path: str | Path, num_vertices: int = 6890) -> np.ndarray:
    """A joint regressor (K, num_vertices) from .npy, .npz or .pkl (array, sparse or 1-key dict).

    Used for HMR2.0's ``SMPL_to_J19.pkl`` and ``J_regressor_h36m.npy``.
    """
    path = Path(path)
    try:
        if path.suffix == ".npy":
            value: Any = np.load(path, allow_pickle=False)
        elif path.suffix == ".npz":
            with open_npz(path) as npz:
                value = {k: npz[k] for k in npz.files}
        else:
            value = safe_unpickle(path)
    except MocapError:
        raise
    except Exception as exc:
        raise MocapError(f"cannot read regressor {path} ({exc}); re-download it") from exc
    if isinstance(value, dict) and len(value) == 1:
        value = next(iter(value.values()))
    array = _as_array(value)
    if array is None or array.ndim != 2 or array.shape[1] != num_vertices:
        raise MocapError(f"{path} is not a (K, {num_vertices}) joint regressor; re-download it")
    return array.astype(np.float64)
