"""Run history: one row per iteration, kept in memory and written as CSV.

:class:`History` records, after each :meth:`SpectralES.tell`, the scalars of
:data:`SCALAR_COLUMNS` and three vectors of length n: the eigenvalues
``sigma^2 / d`` of the covariance (largest first), the mean and the
coordinate standard deviations. Memory stays bounded: when ``max_rows``
rows are stored, every second row is dropped and from then on only every
second iteration is kept (then every fourth, and so on), while the newest
row always reflects the last iteration.

The CSV format (:class:`CSVLog`, :meth:`History.write_csv`) has one header
line and one line per row: the scalar columns, a ``stop`` column that contains
the stop reasons on the last row of each run and is empty otherwise, then
``eigenvalue_0 .. eigenvalue_{n-1}``, ``mean_0 ..`` and ``std_0 ..``.
Floats are written with ``repr``, so they read back exactly.
"""

from __future__ import annotations

import csv
import hashlib
import os
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

__all__ = [
    "COUNT_COLUMNS",
    "CSVLog",
    "History",
    "LOG_TAIL_BYTES",
    "SCALAR_COLUMNS",
    "VECTOR_COLUMNS",
    "check_new_log",
    "csv_header",
    "log_tail_digest",
    "read_csv",
]

SCALAR_COLUMNS = (
    "run",  # restart index, 0 for the first run
    "iteration",  # iteration within the run
    "evaluations",  # objective evaluations of all runs so far
    "time",  # seconds since the first run started
    "iteration_time",  # seconds spent on this iteration, evaluations included
    "f_best",  # best value so far in this run
    "f_min",  # best value of this iteration
    "f_median",  # median value of this iteration
    "f_mean",  # mean of the finite values of this iteration (NaN if none)
    "sigma",  # global step size
    "condition",  # condition number max(d) / min(d) of the covariance
)
VECTOR_COLUMNS = ("eigenvalue", "mean", "std")
# Scalar columns that count, returned as integers (int64); the others are floats.
COUNT_COLUMNS = ("run", "iteration", "evaluations")

# Memory budget of the vector columns, in floats (32 MiB).
_FLOAT_BUDGET = 2**22

# Maximum length of the header line that check_new_log reads. The header
# of n = 10**6 is about 40 MB, and a longer one counts as another kind of file.
_MAX_HEADER_BYTES = 2**26

# Bytes at the end of a log that log_tail_digest hashes: a few rows for small
# n, part of the last row for large n. Any byte that differs there changes
# the digest, and rereading them on each checkpoint costs little.
LOG_TAIL_BYTES = 4096


class History:
    """In-memory record of a run, one row per (kept) iteration.

    Args:
        n: Dimension.
        max_rows: Rows kept before thinning, even, >= 4. Default: what fits
            ``3 n`` floats per row into 32 MiB, between 16 and 20000.

    Attributes:
        run: Restart index written into new rows.
        evaluation_offset: Evaluations of earlier runs, added to ``evaluations``.
        time_offset: Seconds of earlier runs, added to ``time``.
        stride: Iterations between kept rows (1 until the first thinning).
        stops: Stop reasons of finished runs, ``{run: message}``.
    """

    def __init__(self, n: int, max_rows: int | None = None) -> None:
        if max_rows is None:
            max_rows = min(20000, max(16, _FLOAT_BUDGET // (3 * n + len(SCALAR_COLUMNS))))
        if max_rows < 4:
            raise ValueError(f"max_rows must be >= 4, got {max_rows}")
        self.n = n
        self.max_rows = max_rows - max_rows % 2
        self.run = 0
        self.evaluation_offset = 0
        self.time_offset = 0.0
        self.stride = 1
        self.stops: dict[int, str] = {}
        self._scalars = np.empty((self.max_rows, len(SCALAR_COLUMNS)))
        self._vectors = np.empty((len(VECTOR_COLUMNS), self.max_rows, n))
        self._size = 0
        self._count = 0
        self._provisional = False
        self._previous_time = 0.0
        self._squared_basis: np.ndarray | None = None
        self._squared_basis_of: np.ndarray | None = None

    def __len__(self) -> int:
        return self._size

    def __getstate__(self) -> dict[str, Any]:
        # The buffers hold max_rows rows from the start (up to 32 MiB), so pickle
        # and copy.deepcopy take only the filled rows. The B**2 cache is rebuilt
        # on the next record.
        state = self.__dict__.copy()
        state["_scalars"] = self._scalars[: self._size].copy()
        state["_vectors"] = self._vectors[:, : self._size].copy()
        state["_squared_basis"] = None
        state["_squared_basis_of"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._scalars = np.empty((self.max_rows, len(SCALAR_COLUMNS)))
        self._vectors = np.empty((len(VECTOR_COLUMNS), self.max_rows, self.n))
        # Pickles written before History had __getstate__ contain whole buffers, so copy only the filled rows.
        self._scalars[: self._size] = state["_scalars"][: self._size]
        self._vectors[:, : self._size] = state["_vectors"][:, : self._size]

    def __getitem__(self, name: str) -> np.ndarray:
        """Return a copy of a column: shape (rows,) for a scalar, (rows, n) for a vector.

        The columns of :data:`COUNT_COLUMNS` are int64, the others float64.
        """
        if name in SCALAR_COLUMNS:
            column = self._scalars[: self._size, SCALAR_COLUMNS.index(name)]
            return column.astype(np.int64) if name in COUNT_COLUMNS else column.copy()
        if name in VECTOR_COLUMNS:
            return self._vectors[VECTOR_COLUMNS.index(name), : self._size].copy()
        raise KeyError(f"unknown history column {name!r}; use one of {SCALAR_COLUMNS + VECTOR_COLUMNS}")

    @property
    def columns(self) -> tuple[str, ...]:
        """Names accepted by ``history[name]``."""
        return SCALAR_COLUMNS + VECTOR_COLUMNS

    def start_run(self, run: int, evaluation_offset: int, time_offset: float) -> None:
        """Label the following rows as restart ``run`` after earlier runs' evaluations and time."""
        self.run = run
        self.evaluation_offset = evaluation_offset
        self.time_offset = time_offset
        self._previous_time = time_offset

    def record(self, es: Any, elapsed: float) -> None:
        """Append the state of ``es`` after its latest ``tell``; ``elapsed`` is the run's time in seconds."""
        sorted_f = es._last_f  # ascending, non-finite values stored as inf
        finite = sorted_f[np.isfinite(sorted_f)]
        middle = len(sorted_f) // 2
        median = sorted_f[middle] if len(sorted_f) % 2 else 0.5 * (sorted_f[middle - 1] + sorted_f[middle])
        now = self.time_offset + elapsed
        scalars = (
            self.run,
            es.nit,
            self.evaluation_offset + es.nfev,
            now,
            now - self._previous_time,
            es.fbest,
            sorted_f[0],
            median,
            finite.mean() if finite.size else np.nan,
            es.sigma,
            es.condition_number,
        )
        self._previous_time = now
        with np.errstate(over="ignore"):  # a diverging run records inf, not an error
            eigenvalues = np.sort(np.float64(es.sigma) ** 2 / es.d)[::-1]
        self._store(scalars, (eigenvalues, es.feasible_mean, self._coordinate_std(es)))

    def _coordinate_std(self, es: Any) -> np.ndarray:
        """Return ``es.coordinate_std()``, reusing ``B**2`` while ``B`` is unchanged.

        The strategy replaces ``B`` by a new array when it rotates, every few
        iterations for large n, so squaring it again only then cuts the cost
        of a row from an n x n square and product to one product. Above
        n = 2000 the cache would hold too much memory and is not used.
        """
        if es.B is None or es.n > 2000:
            return es.coordinate_std()
        if es.B is not self._squared_basis_of:
            self._squared_basis, self._squared_basis_of = es.B**2, es.B
        std = es.sigma * np.sqrt(self._squared_basis @ (1.0 / es.d))
        return std if es._scaling is None else std * es._scaling

    def row(self, index: int) -> dict[str, Any]:
        """Return row ``index`` (negative counts from the end) as ``{column: value}``.

        Counts (:data:`COUNT_COLUMNS`) are ints, other scalars floats and
        vectors arrays of shape (n,).
        """
        if not -self._size <= index < self._size:
            raise IndexError(f"history row {index} out of range for {self._size} rows")
        index %= self._size
        values: dict[str, Any] = dict(zip(SCALAR_COLUMNS, self._scalars[index].tolist(), strict=True))
        for name in COUNT_COLUMNS:
            values[name] = int(values[name])
        for k, name in enumerate(VECTOR_COLUMNS):
            values[name] = self._vectors[k, index].copy()
        return values

    def write_csv(self, path: str | os.PathLike) -> None:
        """Write all rows to ``path`` in the CSV format of :class:`CSVLog`, replacing the file."""
        with CSVLog(path, self.n, append=False) as log:
            for index in range(self._size):
                row = self.row(index)
                last_of_run = index == self._size - 1 or self._scalars[index + 1, 0] != row["run"]
                log.write(row, self.stops.get(int(row["run"]), "") if last_of_run else "")

    def state_dict(self) -> dict[str, Any]:
        """Return the rows and counters, for checkpoints."""
        return {
            "max_rows": self.max_rows,
            "run": self.run,
            "evaluation_offset": self.evaluation_offset,
            "time_offset": self.time_offset,
            "stride": self.stride,
            "stops": {str(run): message for run, message in self.stops.items()},
            "count": self._count,
            "provisional": self._provisional,
            "previous_time": self._previous_time,
            "scalars": self._scalars[: self._size].copy(),
            "vectors": self._vectors[:, : self._size].copy(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the rows and counters returned by :meth:`state_dict`."""
        type(self).__init__(self, self.n, int(state["max_rows"]))
        self.run = int(state["run"])
        self.evaluation_offset = int(state["evaluation_offset"])
        self.time_offset = float(state["time_offset"])
        self.stride = int(state["stride"])
        self.stops = {int(run): message for run, message in state["stops"].items()}
        self._count = int(state["count"])
        self._provisional = bool(state["provisional"])
        self._previous_time = float(state["previous_time"])
        self._size = len(state["scalars"])
        self._scalars[: self._size] = state["scalars"]
        self._vectors[:, : self._size] = state["vectors"]

    @classmethod
    def from_csv(cls, path: str | os.PathLike) -> History:
        """Read a file written by :class:`CSVLog` or :meth:`write_csv`."""
        header, rows = read_csv(path)
        n = sum(name.startswith("mean_") for name in header)
        history = cls(n, max_rows=max(4, len(rows) + len(rows) % 2))
        for values in rows:
            scalars = [float(values[name]) for name in SCALAR_COLUMNS]
            vectors = [np.array([float(values[f"{name}_{i}"]) for i in range(n)]) for name in VECTOR_COLUMNS]
            history._store(scalars, vectors)
            if values["stop"]:
                history.stops[int(scalars[0])] = values["stop"]
        return history

    def _store(self, scalars: Any, vectors: Any) -> None:
        on_grid = self._count % self.stride == 0
        self._count += 1
        if self._provisional:
            self._size -= 1  # an off-grid row is kept only until the next record replaces it
        if self._size == self.max_rows:
            self._thin()
        self._scalars[self._size] = scalars
        self._vectors[:, self._size] = vectors
        self._size += 1
        self._provisional = not on_grid

    def _thin(self) -> None:
        """Keep every second row and double the stride."""
        keep = self._size // 2
        self._scalars[:keep] = self._scalars[: self._size : 2]
        self._vectors[:, :keep] = self._vectors[:, : self._size : 2]
        self._size = keep
        self.stride *= 2


class CSVLog:
    """Append history rows to a CSV file as a run goes, flushing each line.

    Args:
        path: File to write.
        n: Dimension (number of entries of each vector column).
        append: Keep the existing rows of ``path`` and append; the header is
            written only when the file is new or empty.
    """

    def __init__(self, path: str | os.PathLike, n: int, append: bool = False) -> None:
        self.path = Path(path)
        self.header = csv_header(n)
        new = not append or not self.path.exists() or self.path.stat().st_size == 0
        self._file = open(self.path, "w" if new else "a", newline="")
        # tail_digest reads through this handle, not the path, because the user
        # may move or delete the log while the run goes on. It is unbuffered,
        # so each digest reads the bytes on disk.
        self._reader = open(self.path, "rb", buffering=0)
        self._writer = csv.writer(self._file)
        if new:
            self._writer.writerow(self.header)
            self._file.flush()

    def write(self, row: dict[str, Any], stop: str = "") -> None:
        """Write one history row (as from :meth:`History.row`) and the run's stop reasons if it ended."""
        line = [_format(row[name]) for name in SCALAR_COLUMNS] + [stop]
        for name in VECTOR_COLUMNS:
            line += [repr(float(value)) for value in row[name]]
        self._writer.writerow(line)
        self._file.flush()

    def tell(self) -> int:
        """Return the current size of the file in bytes (the offset a resumed run truncates to)."""
        return self._file.tell()

    def tail_digest(self) -> str:
        """Return :func:`log_tail_digest` of the rows written so far, which a checkpoint stores."""
        return log_tail_digest(self._reader, self.tell())

    def close(self) -> None:
        """Close the file."""
        self._file.close()
        self._reader.close()

    def __enter__(self) -> CSVLog:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


def log_tail_digest(file: BinaryIO, offset: int) -> str:
    """Return the SHA-256 hex digest of the last :data:`LOG_TAIL_BYTES` bytes before ``offset`` in ``file``.

    A checkpoint stores it with the log's size, so that a resumed run can
    recognise its own log after a move or a copy, and reject one that was
    edited or that another run of the same dimension wrote over it since.
    The last rows of two runs differ in their values or at least in their
    time columns, unless n is so large that the window covers only the
    vector columns of one row. ``file`` is open for binary reading, and its
    position moves.
    """
    start = max(0, offset - LOG_TAIL_BYTES)
    file.seek(start)
    digest = hashlib.sha256()
    remaining = offset - start
    while remaining > 0:  # an unbuffered read may return fewer bytes than requested
        chunk = file.read(remaining)
        if not chunk:
            break
        digest.update(chunk)
        remaining -= len(chunk)
    return digest.hexdigest()


def csv_header(n: int) -> list[str]:
    """Return the column names of a log of dimension ``n``: the scalars, ``stop``, then the vectors."""
    return [*SCALAR_COLUMNS, "stop", *(f"{name}_{i}" for name in VECTOR_COLUMNS for i in range(n))]


def check_new_log(path: str | os.PathLike, name: str = "log") -> None:
    """Raise ValueError if ``path`` is a file that a new log must not replace.

    A new log may replace a missing file, an empty one and a spectral_es
    log of any dimension: a file whose first line is :func:`csv_header`.
    Any other file belongs to the user, so the message (started by
    ``name``, such as ``"--log"``) suggests another path.
    """
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        return  # nothing to lose; a directory is check_writable's error

    # The scalar columns first, so that a large file of another kind is not read further.
    start = ",".join(csv_header(0)).encode()
    try:
        with open(path, "rb") as file:
            first_line = file.read(len(start))
            if first_line == start:
                first_line += file.readline(_MAX_HEADER_BYTES)
    except OSError:
        first_line = b""  # unreadable, so no log that could be replaced
    try:
        columns = first_line.decode("ascii").rstrip("\r\n").split(",")
    except UnicodeDecodeError:
        columns = []
    n = sum(column.startswith("mean_") for column in columns)
    if columns != csv_header(n):
        raise ValueError(
            f"{name} {str(path)!r} exists and is not a spectral_es CSV log (its first line is not a log header), "
            "so the run would overwrite it; pass another path, or delete the file"
        )


def read_csv(path: str | os.PathLike) -> tuple[list[str], list[dict[str, str]]]:
    """Return the header and the rows (as ``{column: text}``) of a history CSV file."""
    with open(path, newline="") as file:
        reader = csv.DictReader(file)
        rows = list(reader)
        header = list(reader.fieldnames or [])
    missing = [name for name in SCALAR_COLUMNS + ("stop",) if name not in header]
    if missing:
        raise ValueError(f"{path} is not a spectral_es history file: columns {missing} are missing")
    return header, rows


def _format(value: float) -> str:
    """Write whole-number floats as integers (run, iteration, evaluations), others exactly."""
    if float(value).is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(float(value))
