"""Run history, CSV logs and plots."""

from __future__ import annotations

import hashlib
import pickle
import struct
import subprocess
import sys

import numpy as np
import pytest

from spectral_es import NonFiniteObjectiveWarning, SpectralES, minimize
from spectral_es.es.history import LOG_TAIL_BYTES, SCALAR_COLUMNS, CSVLog, History, log_tail_digest
from spectral_es.functions import ellipsoid, rosenbrock

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_rows_match_strategy_after_each_tell():
    es = SpectralES(np.full(6, 2.0), 1.0, seed=0, bounds=(-1.5, 5), integer_variables=[5])
    for _ in range(30):
        X = es.ask()
        f = ellipsoid(X)
        es.tell(X, f)
        row = es.history.row(-1)
        assert (row["iteration"], row["evaluations"], row["run"]) == (es.nit, es.nfev, 0)
        assert row["f_best"] == es.fbest
        assert row["f_min"] == f.min()
        assert row["f_median"] == np.median(f)
        assert row["f_mean"] == pytest.approx(f.mean(), rel=1e-15)
        assert (row["sigma"], row["condition"]) == (es.sigma, es.condition_number)
        assert np.array_equal(row["eigenvalue"], np.sort(es.sigma**2 / es.d)[::-1])
        assert np.array_equal(row["mean"], es.result.mean)
        # Same arithmetic as coordinate_std, with B**2 reused between rotations.
        assert np.allclose(row["std"], es.coordinate_std(), rtol=1e-15, atol=0)
    assert len(es.history) == 30
    for name in ("run", "iteration", "evaluations"):
        assert es.history[name].dtype == np.int64, name
        assert type(row[name]) is int, name
    assert es.history["f_best"].dtype == np.float64
    assert np.all(np.diff(es.history["time"]) >= 0)
    assert np.all(es.history["iteration_time"] >= 0)


@pytest.mark.parametrize("max_rows", [8, 9])
def test_thinning_bounds_rows_and_keeps_newest(max_rows):
    # An odd max_rows is rounded down to an even one, so thinning halves it.
    es = SpectralES(np.ones(3), 1.0, seed=1)
    es.history = History(3, max_rows=max_rows)
    for iteration in range(1, 101):
        X = es.ask()
        es.tell(X, ellipsoid(X))
        assert len(es.history) <= 8
        assert es.history["iteration"][-1] == iteration  # the newest row is always there
    iterations = es.history["iteration"]
    assert iterations[0] == 1
    # Kept rows lie on a grid of the stride, except the newest.
    assert np.all(np.diff(iterations[:-1]) == es.history.stride)
    assert es.history.stride == 16


def test_csv_round_trip_is_exact(tmp_path):
    result = minimize(rosenbrock, np.zeros(4), 0.5, seed=2, restarts=1, tol_x=1e-3)
    path = tmp_path / "history.csv"
    result.history.write_csv(path)
    again = History.from_csv(path)
    assert len(again) == len(result.history)
    for name in result.history.columns:
        assert np.array_equal(again[name], result.history[name], equal_nan=True), name
    assert again.stops == {0: "tol_x=0.001", 1: "tol_x=0.001"}
    # Only the last row of each run carries its stop reasons, and the count
    # columns are written as integers.
    rows = path.read_text().splitlines()[1:]
    stops = [row.split(",")[len(SCALAR_COLUMNS)] for row in rows]
    assert [stop for stop in stops if stop] == ["tol_x=0.001", "tol_x=0.001"]
    assert rows[0].split(",")[:3] == ["0", "1", str(result.history["evaluations"][0])]


def test_log_rows_and_header(tmp_path):
    path = tmp_path / "log.csv"
    result = minimize(rosenbrock, np.zeros(3), 0.5, seed=3, restarts=1, tol_x=1e-3, log=path)
    lines = path.read_text().splitlines()
    assert lines[0].startswith(",".join(SCALAR_COLUMNS) + ",stop,eigenvalue_0")
    assert len(lines) == 1 + result.nit
    # The last row of each run carries its stop reasons, others none.
    stops = [line.split(",")[len(SCALAR_COLUMNS)] for line in lines[1:]]
    assert [stop for stop in stops if stop] == ["tol_x=0.001", "tol_x=0.001"]
    with CSVLog(path, 3, append=True) as log:
        log.write(result.history.row(-1))
    assert path.read_text().count("run,iteration") == 1  # appending adds no second header


def png_size(path):
    """Width and height from the IHDR chunk of a PNG file."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_plot_writes_valid_png(tmp_path):
    pytest.importorskip("matplotlib")
    from matplotlib.image import imread

    from spectral_es.plot import plot

    result = minimize(rosenbrock, np.zeros(5), 0.5, seed=4, restarts=2, tol_x=1e-4)
    fig = plot(result, tmp_path / "run.png", title="rosenbrock")
    assert png_size(tmp_path / "run.png") == (1100, 800)  # 11 x 8 inches at 100 dpi
    pixels = imread(tmp_path / "run.png")
    assert pixels.shape[:2] == (800, 1100)
    assert pixels.std() > 0.05  # drawn, not blank

    # The panels show the history: f best in the first, one line per
    # coordinate in the others, and a dashed line at each restart.
    f_panel, mean_panel, eigen_panel, std_panel = fig.axes
    assert np.array_equal(f_panel.lines[0].get_ydata(), np.abs(result.history["f_best"]))
    assert np.array_equal(f_panel.lines[0].get_xdata(), result.history["evaluations"])
    assert sum(line.get_linestyle() == "-" for line in mean_panel.lines) == 5
    assert eigen_panel.get_yscale() == "log"
    assert std_panel.get_yscale() == "log"
    assert sum(line.get_linestyle() == "--" for line in f_panel.lines) == len(result.restarts) - 1


def test_plot_reads_csv_log_and_strategy(tmp_path):
    pytest.importorskip("matplotlib")
    from spectral_es.plot import plot

    es = SpectralES(np.ones(3), 1.0, seed=5)
    for _ in range(20):
        X = es.ask()
        es.tell(X, ellipsoid(X))
    es.history.write_csv(tmp_path / "log.csv")
    from_csv = plot(tmp_path / "log.csv", tmp_path / "from_csv.png")
    from_es = plot(es, tmp_path / "from_es.png")
    assert np.array_equal(from_csv.axes[1].lines[0].get_ydata(), from_es.axes[1].lines[0].get_ydata())
    assert png_size(tmp_path / "from_csv.png") == png_size(tmp_path / "from_es.png")


def test_plot_rejects_empty_or_unknown_source():
    pytest.importorskip("matplotlib")
    from spectral_es.plot import plot

    with pytest.raises(ValueError, match="history is empty"):
        plot(SpectralES(np.ones(2), 1.0))
    with pytest.raises(ValueError, match="cannot plot a dict"):
        plot({})


def test_import_does_not_load_matplotlib():
    code = (
        "import sys, numpy, spectral_es; "
        "spectral_es.minimize(spectral_es.functions.sphere, [1.0, 1.0], 1.0, max_evals=60); "
        "print('matplotlib' in sys.modules)"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert completed.stdout.strip() == "False"


def test_history_pickles_filled_rows_only():
    # At n = 100 the buffers take 32 MiB before any row is filled.
    es = SpectralES(np.ones(100), 1.0, seed=4)
    for _ in range(5):
        X = es.ask()
        es.tell(X, ellipsoid(X))
    filled_bytes = es.history["time"].nbytes * len(SCALAR_COLUMNS) + 3 * es.history["mean"].nbytes
    data = pickle.dumps(es.history)
    # 64 KiB covers the attribute names, the stop dict and pickle's framing.
    assert len(data) < filled_bytes + 2**16
    clone = pickle.loads(data)
    for name in es.history.columns:
        np.testing.assert_array_equal(clone[name], es.history[name], err_msg=name)


def test_history_records_after_unpickling():
    es = SpectralES(np.ones(3), 1.0, seed=1)
    es.history = History(3, max_rows=8)
    for _ in range(11):
        X = es.ask()
        es.tell(X, ellipsoid(X))
    clone = pickle.loads(pickle.dumps(es))
    for strategy in (es, clone):
        for _ in range(40):
            X = strategy.ask()
            strategy.tell(X, ellipsoid(X))
    # Thinning continues from the restored stride and rows, so only the
    # wall-clock columns can differ.
    assert clone.history.stride == es.history.stride
    for name in es.history.columns:
        if name not in ("time", "iteration_time"):
            np.testing.assert_array_equal(clone.history[name], es.history[name], err_msg=name)


def test_history_loads_pickle_of_full_buffers(monkeypatch):
    es = SpectralES(np.ones(3), 1.0, seed=2)
    for _ in range(5):
        X = es.ask()
        es.tell(X, ellipsoid(X))
    # Versions before History.__getstate__ pickled the whole buffers, max_rows rows each.
    with monkeypatch.context() as patch:
        patch.delattr(History, "__getstate__")
        data = pickle.dumps(es.history)
    clone = pickle.loads(data)
    assert len(clone) == len(es.history)
    for name in es.history.columns:
        np.testing.assert_array_equal(clone[name], es.history[name], err_msg=name)


def test_even_population_median_and_finite_mean():
    # With 8 values the median is the mean of the middle two, and f_mean
    # skips the non-finite values (stored as inf). The mean of 6 numbers
    # rounds to a few eps.
    es = SpectralES(np.ones(3), 1.0, seed=5, popsize=8)
    X = es.ask()
    f = ellipsoid(X)
    f[[1, 4]] = np.inf
    with pytest.warns(NonFiniteObjectiveWarning):
        es.tell(X, f)
    row = es.history.row(-1)
    assert row["f_median"] == np.median(f)
    assert row["f_mean"] == pytest.approx(np.mean(f[np.isfinite(f)]), rel=1e-15)


def test_iteration_time_is_time_difference():
    # Each row's iteration_time is the time since the previous row (since
    # the run started for the first row), computed from the same floats.
    es = SpectralES(np.ones(3), 1.0, seed=6)
    for _ in range(5):
        X = es.ask()
        es.tell(X, ellipsoid(X))
    time, iteration_time = es.history["time"], es.history["iteration_time"]
    assert iteration_time[0] == time[0]
    np.testing.assert_array_equal(iteration_time[1:], np.diff(time))


def test_std_column_includes_stds_scaling():
    es = SpectralES(np.ones(3), 1.0, seed=7, stds=[1.0, 10.0, 0.1])
    X = es.ask()
    es.tell(X, ellipsoid(X))
    # Same arithmetic as coordinate_std, with B**2 reused between rotations.
    np.testing.assert_allclose(es.history.row(-1)["std"], es.coordinate_std(), rtol=1e-15, atol=0)


def test_restored_history_records_same_row():
    # max_rows = 4 and 6 iterations leave stride 2 and the off-grid row of
    # iteration 6, which the next record replaces. A history restored from
    # its state_dict must record the same next row, iteration_time included.
    es = SpectralES(np.ones(3), 1.0, seed=8)
    es.history = History(3, max_rows=4)
    for _ in range(6):
        X = es.ask()
        es.tell(X, ellipsoid(X))
    assert es.history["iteration"].tolist() == [1, 3, 5, 6]
    restored = History(3)
    restored.load_state_dict(es.history.state_dict())
    elapsed = es.history["time"][-1] + 0.5
    es.history.record(es, elapsed)
    restored.record(es, elapsed)
    assert len(restored) == len(es.history)
    for name in es.history.columns:
        np.testing.assert_array_equal(restored[name], es.history[name], err_msg=name)


@pytest.mark.parametrize("size", [100, 10_000])
def test_log_tail_digest_hashes_last_bytes(tmp_path, size):
    # The digest is the SHA-256 of the last LOG_TAIL_BYTES bytes before the
    # offset, or of all bytes of a shorter file.
    data = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes()
    path = tmp_path / "log.csv"
    path.write_bytes(data)
    with open(path, "rb") as file:
        digest = log_tail_digest(file, size)
    assert digest == hashlib.sha256(data[max(0, size - LOG_TAIL_BYTES) :]).hexdigest()
