"""The resumable result store: one SQLite table, one row per finished cell.

Only the driver process writes (workers return rows; they never open the database), each
row in its own transaction as its cell completes, in WAL mode. The key of a row is the
cell's key (:attr:`inference_comparisons.schema.Cell.key`: model, dataset, target, method,
budget, seed) plus the project version, with a ``UNIQUE`` constraint and ``INSERT OR REPLACE``: a sweep killed at any
moment (even ``kill -9``) keeps every row it committed, never a half-written one, and a
re-run neither duplicates nor recomputes them.
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Mapping

import h5py
import numpy as np
import pandas as pd

__all__ = ["RANK_TABLE", "STORE_NAME", "ResultStore", "decode_ranks", "encode_ranks", "idata_intact",
           "project_version", "read_table"]

STORE_NAME = "results.sqlite"
#: The table of calibration's rows (one a simulation), next to the sweep's ``cells``.
RANK_TABLE = "sbc_ranks"
_TEXT_COLUMNS = {"model", "dataset", "target", "method", "budget_unit", "status", "message", "idata_path",
                 "cell_id", "version", "ranks"}
_INTEGER_COLUMNS = {"budget", "run_budget", "seed", "simulation", "num_datapoints", "num_draws"}


def project_version() -> str:
    """The version of the project the sweep runs: ``pyproject.toml`` next to the package
    when running from a source checkout (so an edited checkout is not confused with the
    installed one), else the installed distribution's metadata."""
    import tomllib

    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    if pyproject.is_file():
        with pyproject.open("rb") as handle:
            return str(tomllib.load(handle)["project"]["version"])
    return metadata.version("latent-variable-zoo")


def encode_ranks(ranks: Mapping[str, Any]) -> str:
    """One simulation's ranks (name -> ``(n,)`` integers) as the ``ranks`` text of its row."""
    return json.dumps({name: np.asarray(values).tolist() for name, values in ranks.items()})


def decode_ranks(texts: Iterable[str]) -> dict[str, np.ndarray]:
    """The ranks of several rows, stacked: name -> ``(rows, n)`` integers (empty for none)."""
    parsed = [json.loads(text) for text in texts]
    return {name: np.array([p[name] for p in parsed], dtype=np.int64) for name in (parsed[0] if parsed else {})}


def idata_intact(out: Path, relative: str) -> bool:
    """Whether the InferenceData file ``out/relative`` exists and holds its groups: the
    observed data, and the posterior unless the method is exact (read from the file's own
    attributes). Opens the file's index only, not its arrays."""
    if not relative:
        return False
    path = Path(out) / relative
    try:
        with h5py.File(path, "r") as handle:
            groups = set(handle.keys())
            kind = handle.attrs.get("method_kind", b"")
    except (OSError, ValueError):
        return False
    kind = kind.decode() if isinstance(kind, bytes) else str(kind)
    return "observed_data" in groups and (kind == "exact" or "posterior" in groups)


def _sql_type(column: str) -> str:
    if column in _TEXT_COLUMNS:
        return "TEXT"
    return "INTEGER" if column in _INTEGER_COLUMNS else "REAL"


def _sql_value(column: str, value: Any) -> Any:
    if value is None:
        return None
    if column in _TEXT_COLUMNS:
        return str(value)
    if column in _INTEGER_COLUMNS:
        return int(value)
    value = float(value)
    return None if math.isnan(value) else value  # NULL reads back as NaN


class ResultStore:
    """``DIR/results.sqlite``. Open it in the driver only. ``table`` is ``cells`` (a sweep's
    rows) or another table of the same file with the same keys and guarantees (calibration's
    ranks, one row a simulation)."""

    def __init__(self, path: Path | str, columns: Iterable[str], table: str = "cells"):
        if not table.isidentifier():
            raise ValueError(f"a store table name must be an identifier, got {table!r}")
        self.path, self.name = Path(path), table
        self.columns = ["cell_id", "version", *[c for c in columns if c not in ("cell_id", "version")],
                        "finished_at"]
        # isolation_level=None: transactions are explicit (BEGIN ... COMMIT below).
        self._connection = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        self._connection.execute("PRAGMA journal_mode=WAL")
        # In WAL mode, synchronous=NORMAL keeps every committed transaction through a crash
        # of this process (SIGKILL); only an operating-system crash could lose the last ones.
        self._connection.execute("PRAGMA synchronous=NORMAL")
        declared = ", ".join(f'"{c}" {_sql_type(c)}' for c in self.columns)
        self._connection.execute(f"CREATE TABLE IF NOT EXISTS {table} ({declared}, UNIQUE (cell_id, version))")
        present = {row[1] for row in self._connection.execute(f"PRAGMA table_info({table})")}
        for column in self.columns:  # a store written by an older version gains new columns
            if column not in present:
                self._connection.execute(f'ALTER TABLE {table} ADD COLUMN "{column}" {_sql_type(column)}')

    def close(self) -> None:
        self._connection.close()

    def __enter__(self) -> "ResultStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def statuses(self, version: str) -> dict[str, str]:
        """``cell_id -> status`` of every stored cell of ``version``."""
        rows = self._connection.execute(f"SELECT cell_id, status FROM {self.name} WHERE version = ?", (version,))
        return dict(rows.fetchall())

    def idata_paths(self, version: str) -> dict[str, str]:
        """``cell_id -> idata_path`` ('' for none) of every stored cell of ``version``."""
        rows = self._connection.execute(f"SELECT cell_id, idata_path FROM {self.name} WHERE version = ?", (version,))
        return {key: path or "" for key, path in rows.fetchall()}

    def put(self, row: Mapping[str, Any]) -> None:
        """Store one finished cell (replacing an earlier row with the same key) atomically."""
        values = dict(row, finished_at=time.time())
        names = ", ".join(f'"{c}"' for c in self.columns)
        marks = ", ".join("?" for _ in self.columns)
        with self._transaction():
            self._connection.execute(f"INSERT OR REPLACE INTO {self.name} ({names}) VALUES ({marks})",
                                     [_sql_value(c, values.get(c)) for c in self.columns])

    def _transaction(self):
        connection = self._connection

        class _Transaction:
            def __enter__(self) -> None:
                connection.execute("BEGIN IMMEDIATE")

            def __exit__(self, kind, *exc: object) -> None:
                connection.execute("COMMIT" if kind is None else "ROLLBACK")

        return _Transaction()

    def table(self, latest_only: bool = True) -> pd.DataFrame:
        """Every stored row; with ``latest_only``, for each cell only the row of the most
        recently finished version (rows of other versions stay in the file)."""
        return _table(self._connection, latest_only, self.name)


def _table(connection: sqlite3.Connection, latest_only: bool, table: str = "cells") -> pd.DataFrame:
    frame = pd.read_sql_query(f"SELECT * FROM {table} ORDER BY finished_at", connection)
    if latest_only and len(frame):
        frame = frame.drop_duplicates("cell_id", keep="last")
    for column in ("message", "idata_path"):
        if column in frame:
            frame[column] = frame[column].fillna("")
    return frame.reset_index(drop=True)


#: The columns without which a file is not a results store.
_REQUIRED_COLUMNS = ("cell_id", "version", "status", "finished_at")


def read_table(path: Path | str, latest_only: bool = True, table: str = "cells",
               missing_ok: bool = False) -> pd.DataFrame | None:
    """The rows of ``table`` (``cells``, or calibration's ``sbc_ranks``) of the store at
    ``path``, read without writing to it (``report`` and ``diagnose`` must not change what
    they read, not even to add a column): a missing file, a file that is not SQLite, or a
    database without the table is a ``ValueError`` (``None`` for a missing table with
    ``missing_ok``)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no results in {path.parent}: {path} does not exist")
    try:
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            present = {row[1] for row in connection.execute(f"PRAGMA table_info({table})")}
            if not present and missing_ok:
                return None
            missing = [column for column in _REQUIRED_COLUMNS if column not in present]
            if missing:
                raise ValueError(f"{path} is not a results store: " + (
                    f"it has no {table} table" if not present else f"its {table} table has no {', '.join(missing)}"))
            return _table(connection, latest_only, table)
        finally:
            connection.close()
    except sqlite3.DatabaseError as error:
        raise ValueError(f"{path} is not a readable results store: {error}") from None

