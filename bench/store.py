"""Results on disk: one folder per run, written atomically, readable as one table.

Layout of ``--out DIR``::

    DIR/<run_id>/metrics.parquet   tidy rows, one per metric (schema below)
    DIR/<run_id>/_run.json         full config, environment and status of the run
    DIR/<run_id>/_checkpoints/     training checkpoints, when a task saves them

``pandas.read_parquet(DIR)`` reads every run at once: pyarrow skips names starting
with "_" or ".", which is why the sidecar and temporary files are named so. Files
are written to a temporary name and renamed, so a reader never sees half a file;
run folders are created exclusively, so runs never overwrite each other.
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from .errors import UserError
from .schema import COLUMNS

# The Arrow type of each Python column type in gradbench.schema.COLUMNS.
_ARROW = {str: pa.string(), int: pa.int64(), float: pa.float64(), datetime: pa.timestamp("us", tz="UTC")}
SCHEMA = pa.schema([(name, _ARROW[kind]) for name, kind in COLUMNS.items()])

METRICS_FILE = "metrics.parquet"
SIDECAR_FILE = "_run.json"


def new_run_id(now: datetime | None = None) -> str:
    """Sortable and unique: UTC time plus random hex."""
    now = now or datetime.now(timezone.utc)
    return f"{now:%Y%m%dT%H%M%S}-{secrets.token_hex(3)}"


def create_run_dir(out: Path, now: datetime | None = None) -> tuple[str, Path]:
    """Create ``out/<run_id>`` exclusively (a clash draws a new id)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the results folder {out}: {exc.strerror}; choose another --out") from None
    for _ in range(100):
        run_id = new_run_id(now)
        path = out / run_id
        try:
            path.mkdir()
        except FileExistsError:
            continue
        except OSError as exc:  # a read-only or full results folder
            raise UserError(f"cannot create a run folder in {out}: {exc.strerror}; choose another --out") from None
        return run_id, path
    raise RuntimeError(f"could not create a unique run folder in {out}")


def _atomic_write(path: Path, write) -> None:
    """Write through a temporary file that replaces ``path``; on any failure, no temporary file is left.

    The file gets the mode a plain ``open`` would give (0666 less the umask), not mkstemp's 0600,
    so others on a shared machine can read results when the umask lets them.
    """
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, str(path)) from None
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError) and exc.filename is None:  # full disk, size limit: name the file for the CLI
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
        raise


def _umask() -> int:
    """The process umask (read by setting it, so set straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`_atomic_write`), for reports and CSV files."""
    _atomic_write(Path(path), lambda fh: fh.write(data))


def write_metrics(run_dir: Path, rows: Iterable[dict[str, Any]]) -> Path:
    """Write (or atomically replace) the run's metrics file."""
    table = pa.Table.from_pylist(list(rows), schema=SCHEMA)
    path = run_dir / METRICS_FILE
    _atomic_write(path, lambda fh: pq.write_table(table, fh))
    return path


def write_sidecar(run_dir: Path, config: dict[str, Any]) -> Path:
    path = run_dir / SIDECAR_FILE
    text = json.dumps(config, indent=1, sort_keys=True, default=str).encode()
    _atomic_write(path, lambda fh: fh.write(text))
    return path


def read_sidecar(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / SIDECAR_FILE).read_text())


def read_results(path: str | Path):
    """All rows under ``path`` (a results folder, a run folder or one Parquet file) as a DataFrame."""
    import pandas as pd

    path = Path(path)
    if not path.exists():
        raise UserError(f"no results at {path}: expected a results folder, a run folder or a .parquet file")
    files = [path] if path.is_file() else sorted(
        p for p in path.rglob("*.parquet") if not any(part.startswith((".", "_")) for part in p.relative_to(path).parts)
    )
    if not files:
        raise UserError(f"no results in {path}: it holds no metrics.parquet files; run 'gradbench run --out {path}' first")
    tables = []
    for file in files:
        try:
            table = pq.read_table(file)
        except (pa.ArrowInvalid, OSError) as exc:
            raise UserError(f"{file} is not a readable Parquet file ({exc}); delete it or move it out of {path}") from None
        check_schema(table.schema, file, path)
        target = pa.schema([f.with_type(SCHEMA.field(f.name).type) if f.name in SCHEMA.names else f
                            for f in table.schema])
        try:
            tables.append(table.cast(target))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
            raise UserError(f"{file}: its columns do not convert to gradbench's types ({exc}); move it out of {path}") from None
    try:
        table = pa.concat_tables(tables, promote_options="default")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise UserError(f"the results under {path} do not fit together ({exc}); read them separately") from None
    return table.to_pandas()


def check_schema(schema: pa.Schema, file: Path, root: Path) -> None:
    """Every column of SCHEMA present with a type that casts to it; else one line naming file and column.

    Extra columns are kept (a newer version may add some); integer columns may be read as floats
    and vice versa only where the cast is lossless in meaning (counts stored as int are fine as float).
    """
    for expected in SCHEMA:
        if expected.name not in schema.names:
            raise UserError(f"{file} is not a gradbench results file: it has no column {expected.name!r}; "
                            f"move it out of {root} (or regenerate it with 'gradbench run')")
        found = schema.field(expected.name).type
        if not _castable(found, expected.type):
            raise UserError(f"{file}: column {expected.name!r} holds {found}, expected {expected.type}; "
                            f"move it out of {root} (or regenerate it with 'gradbench run')")


def _castable(found: pa.DataType, expected: pa.DataType) -> bool:
    if found == expected or pa.types.is_null(found):
        return True
    if pa.types.is_string(expected):
        return pa.types.is_string(found) or pa.types.is_large_string(found) or pa.types.is_dictionary(found) \
            and pa.types.is_string(found.value_type)
    if pa.types.is_timestamp(expected):
        return pa.types.is_timestamp(found)
    if pa.types.is_integer(expected):
        return pa.types.is_integer(found)
    if pa.types.is_floating(expected):
        return pa.types.is_floating(found) or pa.types.is_integer(found)
    return False
