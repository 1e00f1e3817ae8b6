"""Checkpoints of SpectralES: state dictionaries and files.

:func:`state_dict` returns everything a run depends on as a nested
dictionary of numpy arrays and plain Python values. It contains the
constants, the distribution, the counters and histories of the stop
criteria, the pending ``ask`` (if any) and the run history. It also contains
the bit-generator state of the private ``numpy.random.Generator``, so a
strategy restored from it continues exactly as the original would: the same
samples, the same updates, bit for bit.

Files (:func:`save`, :func:`load`) are ``.npz`` archives: every array is a
member of its own, and the rest of the dictionary is one JSON document in
the member ``__json__``. They are read with ``allow_pickle=False``, so
loading a file never runs code from it, unlike pickle. A save writes a
temporary file next to the target and renames it over the target, so an
interruption leaves the previous checkpoint intact.
"""

from __future__ import annotations

import io
import json
import numbers
import os
import reprlib
import stat
import tempfile
import time
import zipfile
from collections import deque
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from spectral_es.es.bounds import Bounds, Domain
from spectral_es.es.noise import UncertaintyHandler
from spectral_es.es.parameters import Parameters

__all__ = [
    "check_distinct",
    "check_storable",
    "check_writable",
    "from_state_dict",
    "load",
    "load_state_dict",
    "read",
    "read_extra",
    "read_state",
    "same_file",
    "save",
    "state_dict",
    "with_later_options",
    "write",
]

FORMAT = "spectral_es.SpectralES"
VERSION = 1

# Attributes of SpectralES that state_dict covers; a test compares this
# list with vars(es), so a new attribute cannot be left out unnoticed.
COVERED_ATTRIBUTES = frozenset(
    {
        "B", "_X", "_best_history", "_disp_lines", "_flat_iterations", "_last_f", "_pending_curvature", "_rng",
        "_scaling", "_stagnation_best", "_stagnation_median", "_start_time", "_stop", "_warned_nonfinite", "_z",
        "cayley", "d", "diagonal", "domain", "fbest", "history", "integer_min_std", "mean", "n_nonfinite", "nfev",
        "nit", "noise", "options", "p_c", "p_sigma", "params", "preset", "rotation_interval", "seed", "sigma",
        "sigma0", "xbest",
    }
)  # fmt: skip
_DEQUES = ("_best_history", "_stagnation_best", "_stagnation_median")
_OPTIONAL_ARRAYS = ("B", "_pending_curvature", "_scaling", "_z", "_X")
_DICTIONARY_FIX = "pass the dictionary that state_dict() returned, unchanged"

# Options added after the first checkpoints were written, with the value that an
# older state gets: pycma's tolupsigma, measured from the saved sigma.
LATER_OPTIONS = {"tol_up_sigma": 1e20}

# The shapes of the saved arrays, in terms of the saved n and popsize (lam);
# None stands for any length (the number of history rows).
_SHAPES: dict[tuple[str, ...], tuple[str | int | None, ...]] = {
    ("config", "params", "mean_weights"): ("lam",),
    ("config", "params", "shape_weights"): ("lam",),
    ("config", "domain", "lower"): ("n",),
    ("config", "domain", "upper"): ("n",),
    **{("state", name): ("n",) for name in ("mean", "d", "p_sigma", "p_c", "xbest", "scaling")},
    ("state", "last_f"): ("lam",),
    ("state", "B"): ("n", "n"),
    ("state", "pending_curvature"): ("n", "n"),
    ("state", "z"): ("lam", "n"),
    ("state", "X"): ("lam", "n"),
    ("history", "vectors"): (3, None, "n"),
}


def state_dict(es: Any) -> dict[str, Any]:
    """Return the complete state of ``es``; arrays are copies.

    The dictionary has the keys ``format``, ``version``, ``config`` (what
    the constructor decides: constants, options, domain), ``state`` (what
    ``tell`` changes), ``rng`` (the bit-generator state), ``noise`` and
    ``history``.
    """
    config = {
        "params": {key: _copy(value) for key, value in asdict(es.params).items()},
        "diagonal": es.diagonal,
        "preset": es.preset,
        "cayley": es.cayley,
        "rotation_interval": es.rotation_interval,
        "options": dict(es.options),
        "sigma0": es.sigma0,
        "seed": es.seed,
        "domain": es.domain.state_dict(),
        "integer_min_std": es.integer_min_std,
        "noise_max_evaluations": None if es.noise is None else es.noise.max_evaluations,
    }
    state = {
        "mean": es.mean.copy(),
        "sigma": es.sigma,
        "d": es.d.copy(),
        "p_sigma": es.p_sigma.copy(),
        "p_c": es.p_c.copy(),
        "xbest": es.xbest.copy(),
        "fbest": es.fbest,
        "nit": es.nit,
        "nfev": es.nfev,
        "n_nonfinite": es.n_nonfinite,
        "last_f": es._last_f.copy(),
        "flat_iterations": es._flat_iterations,
        "stop": dict(es._stop),
        "warned_nonfinite": es._warned_nonfinite,
        "disp_lines": es._disp_lines,
        "elapsed": time.perf_counter() - es._start_time,
    }
    for name in _OPTIONAL_ARRAYS:
        value = getattr(es, name)
        state[name.lstrip("_")] = None if value is None else value.copy()
    for name in _DEQUES:
        values = getattr(es, name)
        state[name.lstrip("_")] = {"values": np.array(values, dtype=float), "maxlen": values.maxlen}
    return {
        "format": FORMAT,
        "version": VERSION,
        "config": config,
        "state": state,
        "rng": es._rng.bit_generator.state,
        "noise": None if es.noise is None else es.noise.state_dict(),
        "history": es.history.state_dict(),
    }


def load_state_dict(es: Any, state_dict: dict[str, Any]) -> None:
    """Restore ``es`` in place from :func:`state_dict`'s output.

    Raises:
        ValueError: if the dictionary is not a SpectralES state, if an
            array's shape does not fit its saved n and population size, or if
            it was saved from a strategy of another dimension, population
            size, preset or model (full or diagonal).
    """
    _check_format(state_dict)
    _check_shapes(state_dict, "the state dictionary", _DICTIONARY_FIX)
    config, state = state_dict["config"], state_dict["state"]
    saved = (len(state["mean"]), int(config["params"]["lam"]), config["preset"], bool(config["diagonal"]))
    current = (es.n, es.popsize, es.preset, es.diagonal)
    if saved != current:
        raise ValueError(
            f"the state is of a strategy with (n, popsize, preset, diagonal) = {saved}, this one has {current}; "
            "construct the strategy with the same settings or use SpectralES.from_state_dict(state)"
        )

    # Constants and domain, as saved (they may differ from today's defaults).
    es.params = Parameters(**{key: _as_saved(value) for key, value in config["params"].items()})
    es.cayley = config["cayley"]
    es.rotation_interval = int(config["rotation_interval"])
    es.options = with_later_options(config["options"])
    # States saved before tol_up_sigma existed have no sigma0, so the saved sigma takes its place.
    es.sigma0 = float(config.get("sigma0", state["sigma"]))
    es.seed = config["seed"]
    es.domain = Domain(es.n, _bounds(config["domain"]), config["domain"]["integer_variables"])
    es.integer_min_std = float(config["integer_min_std"])

    # Distribution, counters and stop-criterion histories.
    for name in ("mean", "d", "p_sigma", "p_c", "xbest"):
        setattr(es, name, np.array(state[name], dtype=float))
    es.sigma, es.fbest = float(state["sigma"]), float(state["fbest"])
    es.nit, es.nfev, es.n_nonfinite = int(state["nit"]), int(state["nfev"]), int(state["n_nonfinite"])
    es._last_f = np.array(state["last_f"], dtype=float)
    es._flat_iterations = int(state["flat_iterations"])
    es._stop = dict(state["stop"])
    es._warned_nonfinite = bool(state["warned_nonfinite"])
    # A loaded strategy prints its column header again before its next
    # progress line, which may be the first one of a new process.
    es._disp_lines = 0
    es._start_time = time.perf_counter() - float(state["elapsed"])
    for name in _OPTIONAL_ARRAYS:
        value = state[name.lstrip("_")]
        setattr(es, name, None if value is None else np.array(value, dtype=float))
    for name in _DEQUES:
        saved = state[name.lstrip("_")]
        setattr(es, name, deque(np.asarray(saved["values"]).tolist(), maxlen=saved["maxlen"]))

    # Random state, noise handler and history.
    es._rng.bit_generator.state = state_dict["rng"]
    es.noise = None
    if state_dict["noise"] is not None:
        es.noise = UncertaintyHandler(es.n, es.popsize, int(state_dict["noise"]["max_evaluations"]))
        es.noise.load_state_dict(state_dict["noise"])
    es.history.load_state_dict(state_dict["history"])


def with_later_options(options: dict[str, Any]) -> dict[str, Any]:
    """Return a copy of saved ``options`` that adds each option of :data:`LATER_OPTIONS` it lacks."""
    return {**options, **{name: value for name, value in LATER_OPTIONS.items() if name not in options}}


def from_state_dict(cls: type, state_dict: dict[str, Any]) -> Any:
    """Construct a strategy of class ``cls`` with the settings saved in ``state_dict`` and load it.

    Raises:
        ValueError: as :func:`load_state_dict`.
    """
    _check_format(state_dict)
    _check_shapes(state_dict, "the state dictionary", _DICTIONARY_FIX)
    config, state = state_dict["config"], state_dict["state"]
    # The box is left out because load_state_dict restores the domain. With
    # it, the constructor would compare the current sigma, without the saved
    # stds scaling, against the box and warn about a sigma0 the user never passed.
    es = cls(
        np.asarray(state["xbest"], dtype=float),  # a valid start; the mean is restored below
        float(state["sigma"]),
        popsize=int(config["params"]["lam"]),
        diagonal=bool(config["diagonal"]),
        preset=config["preset"],
        integer_variables=config["domain"]["integer_variables"],
        noise_handling=config["noise_max_evaluations"] is not None,
        noise_max_evaluations=config["noise_max_evaluations"] or 20,
    )
    load_state_dict(es, state_dict)
    return es


def check_writable(path: str | os.PathLike, name: str) -> None:
    """Raise ValueError unless a file can be written at ``path``.

    Its directory must exist and be writable, and ``path`` must not be a
    directory or a read-only file. ``name`` (``"checkpoint"``, ``"--log"``,
    ...) starts the message. Runs call this before the first evaluation, so
    a typo in a path fails at once rather than at the first save.
    """
    path = Path(path)
    folder = path.parent
    if path.is_dir():
        raise ValueError(f"{name} {str(path)!r} is a directory; give a file name inside it")
    if not folder.is_dir():
        raise ValueError(
            f"{name} {str(path)!r}: the directory {str(folder)!r} does not exist; create it or choose another path"
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"{name} {str(path)!r}: the directory {str(folder)!r} is not writable; choose another path")
    if path.exists() and not os.access(path, os.W_OK):
        raise ValueError(f"{name} {str(path)!r} is read-only; make it writable or choose another path")


def check_distinct(paths: dict[str, str | os.PathLike | None]) -> None:
    """Raise ValueError if two of the named ``paths`` are the same file; ``None`` entries are skipped.

    Each key (``"log"``, ``"--plot"``, ...) names its path in the message.
    Two existing paths are compared with :func:`os.path.samefile`, so links
    count as the same file. Otherwise the resolved absolute paths are
    compared, which for a file that does not exist yet is the normalised
    absolute path.
    """
    named = [(name, path) for name, path in paths.items() if path is not None]
    for k, (first, first_path) in enumerate(named):
        for second, second_path in named[k + 1 :]:
            if same_file(first_path, second_path):
                raise ValueError(
                    f"{first} and {second} name the same file {os.fspath(first_path)!r}, so one would overwrite "
                    "the other; give each its own path"
                )


def check_storable(entries: dict[str, Any], name: str) -> None:
    """Raise ValueError naming the first entry of ``entries`` that a checkpoint cannot store.

    A checkpoint stores numeric arrays as members and everything else as
    JSON: numbers, strings, booleans, ``None`` and lists, tuples and
    dictionaries of these. ``name`` (``"option"``, ...) starts the message.
    Runs call this before the first evaluation, so an unstorable value
    fails at once rather than at the first save.
    """
    for key, value in entries.items():
        arrays: dict[str, np.ndarray] = {}
        try:
            json.dumps(_encode(value, arrays))
            objects = [array for array in arrays.values() if array.dtype.hasobject]
            if objects:
                raise TypeError(f"an array of dtype {objects[0].dtype} contains Python objects")
        except (TypeError, ValueError) as error:
            raise ValueError(
                f"{name} {key}={reprlib.repr(value)} cannot be stored in a checkpoint ({error}); "
                "pass numbers, strings, lists or numeric arrays"
            ) from error


def write(path: str | os.PathLike, tree: dict[str, Any]) -> None:
    """Write a nested dictionary of arrays and JSON values to ``path`` atomically (npz + JSON).

    Raises:
        ValueError: if ``path`` cannot be written (see :func:`check_writable`).
    """
    check_writable(path, "checkpoint")
    arrays: dict[str, np.ndarray] = {}
    document = _encode(tree, arrays)
    arrays["__json__"] = np.array(json.dumps(document))
    buffer = io.BytesIO()
    # The keys are "a<k>" and "__json__", so no array lands in savez's allow_pickle argument.
    np.savez(buffer, **arrays)  # type: ignore[arg-type]  # numpy's stub matches **arrays to allow_pickle: bool

    # Write next to the target and rename over it: readers see either the
    # old file or the complete new one. mkstemp creates the file for its
    # owner only (0600), so it gets the permissions the target has or, for
    # a new file, those that the umask leaves.
    path = Path(path)
    mode = _file_mode(path)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or ".")
    try:
        with os.fdopen(handle, "wb") as file:
            if hasattr(os, "fchmod"):  # not on Windows, where only the read-only flag exists
                os.fchmod(file.fileno(), mode)
            file.write(buffer.getvalue())
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _file_mode(path: Path) -> int:
    """Return the permission bits of ``path``, or for a new file ``0o666`` less the process umask."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except OSError:
        umask = os.umask(0o022)  # the only way to read the umask is to set it
        os.umask(umask)
        return 0o666 & ~umask


def read(path: str | os.PathLike) -> dict[str, Any]:
    """Read a file written by :func:`write`; never unpickles.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if ``path`` is not a checkpoint: a folder, not an
            ``.npz`` archive (a CSV log, a truncated file), an archive with
            pickled objects or without the JSON document.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {str(path)!r} not found; check the path")
    if path.is_dir():
        raise _not_a_checkpoint(path, "a folder, not a file")
    if not path.is_file() or not zipfile.is_zipfile(path):
        raise _not_a_checkpoint(path, "not an .npz archive, or a truncated one")

    # Arrays first: pickled objects are rejected, never loaded.
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except ValueError as error:
        raise _not_a_checkpoint(path, f"a member cannot be read without pickle: {error}") from error
    except (OSError, EOFError, zipfile.BadZipFile) as error:
        raise _not_a_checkpoint(path, f"the archive is damaged: {error}") from error

    # Then the JSON document, whose array references point into the members.
    if "__json__" not in arrays:
        raise _not_a_checkpoint(path, "the archive has no __json__ member")
    try:
        return _decode(json.loads(str(arrays.pop("__json__"))), arrays)
    except ValueError as error:
        raise _not_a_checkpoint(path, f"its __json__ member is not valid JSON: {error}") from error
    except KeyError as error:
        raise _not_a_checkpoint(path, f"its JSON document refers to the missing member {error}") from error


def save(es: Any, path: str | os.PathLike, extra: dict[str, Any] | None = None) -> None:
    """Save ``es`` (and an optional ``extra`` dictionary) to ``path`` atomically."""
    tree = state_dict(es)
    tree["extra"] = extra or {}
    write(path, tree)


def load(cls: type, path: str | os.PathLike) -> tuple[Any, dict[str, Any]]:
    """Return the strategy saved in ``path`` (constructed as ``cls``) and its ``extra`` dictionary.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if ``path`` is not a checkpoint (see :func:`read`), or is
            damaged: an array's shape does not fit the saved n and popsize.
    """
    tree = read_state(path)
    _check_shapes(tree, os.fspath(path), "load an undamaged checkpoint")
    extra = tree.pop("extra", {})
    return from_state_dict(cls, tree), extra


def read_extra(path: str | os.PathLike) -> dict[str, Any]:
    """Return the ``extra`` dictionary saved in ``path`` without restoring the strategy."""
    return read_state(path).get("extra", {})


def read_state(path: str | os.PathLike) -> dict[str, Any]:
    """Return the state dictionary saved in ``path`` (with ``extra``), with its format checked.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if ``path`` is not a SpectralES checkpoint, or one of
            another state version.
    """
    tree = read(path)
    if not isinstance(tree, dict) or tree.get("format") != FORMAT:
        raise _not_a_checkpoint(path, f"its format entry is not {FORMAT!r}")
    _check_version(tree, os.fspath(path))
    return tree


def _not_a_checkpoint(path: str | os.PathLike, reason: str) -> ValueError:
    return ValueError(
        f"{os.fspath(path)} is not a spectral_es checkpoint ({reason}); "
        "pass a file written by minimize(..., checkpoint=...), --checkpoint or SpectralES.save"
    )


def _check_shapes(tree: dict[str, Any], source: str, fix: str) -> None:
    """Raise ValueError naming the first array whose shape does not fit the saved n and popsize.

    ``source`` (a file name or "the state dictionary") starts the message
    and ``fix`` ends it.
    """
    params = tree["config"]["params"]
    sizes = {"n": int(params["n"]), "lam": int(params["lam"])}
    for keys, dims in _SHAPES.items():
        node: Any = tree
        for key in keys:
            node = node.get(key) if isinstance(node, dict) else None
        if node is None:
            continue  # an optional array that this state does not have
        shape = np.shape(node)
        expected = tuple(sizes.get(dim, dim) if isinstance(dim, str) else dim for dim in dims)
        fits = len(shape) == len(expected) and all(e is None or s == e for s, e in zip(shape, expected, strict=True))
        if not fits:
            required = ", ".join("rows" if e is None else str(e) for e in expected)
            if len(expected) == 1:
                required += ","  # written as Python writes a 1-tuple
            raise ValueError(
                f"{source} is damaged: its array {'/'.join(keys)} has shape {shape}, but its settings say "
                f"n = {sizes['n']} and popsize = {sizes['lam']}, which need the shape ({required}); {fix}"
            )


def _check_format(state_dict: Any) -> None:
    if not isinstance(state_dict, dict) or state_dict.get("format") != FORMAT:
        raise ValueError("not a SpectralES state dictionary: its 'format' entry is missing or different")
    _check_version(state_dict, "the state dictionary")


def _check_version(tree: dict[str, Any], source: str) -> None:
    """Raise ValueError unless ``tree`` has this module's :data:`VERSION`. ``source`` starts the message."""
    # Imported here, because spectral_es imports this module while it is initialised.
    from spectral_es import __version__

    version = tree.get("version")
    # Versions are whole numbers: a NumPy integer counts, a bool or a float does not.
    number = int(version) if isinstance(version, numbers.Integral) and not isinstance(version, bool) else None
    if number == VERSION:
        return
    if number is not None and number > VERSION:
        fix = "it was saved by a newer spectral_es, so upgrade spectral_es to load it"
    elif number is not None and number >= 1:
        fix = "it was saved by an older spectral_es, so load it with that version"
    else:
        fix = "no spectral_es writes that version, so the state is damaged"
    raise ValueError(
        f"{source}: SpectralES state version {version!r} is not supported by spectral_es {__version__}, "
        f"which reads version {VERSION}; {fix}"
    )


def same_file(first: str | os.PathLike, second: str | os.PathLike) -> bool:
    """Return whether two paths name the same file, existing or not (see :func:`check_distinct`)."""
    if os.path.exists(first) and os.path.exists(second):
        return os.path.samefile(first, second)
    return Path(first).resolve() == Path(second).resolve()


def _bounds(domain: dict[str, Any]) -> Bounds | None:
    return Bounds(domain["lower"], domain["upper"]) if "lower" in domain else None


def _copy(value: Any) -> Any:
    return value.copy() if isinstance(value, np.ndarray) else value


def _as_saved(value: Any) -> Any:
    """Return arrays as float arrays and numbers as Python numbers, as the constructor makes them."""
    if isinstance(value, (list, np.ndarray)):
        return np.asarray(value, dtype=float)
    return value


def _encode(node: Any, arrays: dict[str, np.ndarray]) -> Any:
    """Return ``node`` with every array replaced by a reference into ``arrays``."""
    if isinstance(node, np.ndarray):
        key = f"a{len(arrays)}"
        arrays[key] = node
        return {"__array__": key}
    if isinstance(node, dict):
        return {str(key): _encode(value, arrays) for key, value in node.items()}
    if isinstance(node, (list, tuple)):
        return [_encode(value, arrays) for value in node]
    if isinstance(node, (np.integer, np.floating, np.bool_)):
        return node.item()
    return node


def _decode(node: Any, arrays: dict[str, np.ndarray]) -> Any:
    if isinstance(node, dict):
        if set(node) == {"__array__"}:
            return arrays[node["__array__"]]
        return {key: _decode(value, arrays) for key, value in node.items()}
    if isinstance(node, list):
        return [_decode(value, arrays) for value in node]
    return node
