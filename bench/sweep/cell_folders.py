"""Where a sweep's cells live: one run folder per cell, present only once it is finished.

Layout of a sweep's ``--out``: ``<cell name>/`` holds ``metrics.parquet``, ``_run.json``
(whose ``cell.status`` is ``complete`` or ``failed``) and any ``_checkpoints/``, the
same as a ``gradbench run`` folder, so reports, comparisons and
``pandas.read_parquet(out)`` read it unchanged. Hidden names (``.``) hold work in
progress and locks; pyarrow and :func:`gradbench.store.read_results` skip them.

Local folders (paths or ``file://`` URIs):

- a cell runs in ``.<name>.<token>.tmp/``, renamed to ``<name>/`` once its sidecar
  says how it ended. A rename is atomic, so a kill at any instant leaves either a
  finished cell folder or hidden leftovers, which the next claim of the cell deletes;
  a cell's rows appear once or not at all.
- a worker holds an exclusive ``flock`` on ``.gradbench/locks/<name>.lock`` while it
  runs a cell; the kernel releases it when the process dies, even by SIGKILL. Two
  sweeps on one folder never run the same cell at once: the second reports it busy.
  (flock works on local disks, and on NFS through the kernel's lock manager.)

Other pyarrow filesystems (``s3://``, ``gs://``, ``hdfs://``; what
``pyarrow.fs.FileSystem.from_uri`` reads): a cell runs in a local temporary folder and
is uploaded when finished, each file to a hidden name then moved into place (on
object stores an object appears whole when written), the sidecar last: a cell counts
as finished only when its sidecar is there. A kill mid-upload can leave the cell's
complete metrics without a sidecar; the cell is then re-run and its files replaced
at the same paths, so rows are never duplicated. There are no locks: two sweeps on
one bucket at once may both run a cell, and the second upload replaces the first.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from ..errors import UserError
from ..store import SIDECAR_FILE

LOCKS = ".gradbench/locks"


class Busy(Exception):
    """Another process holds the cell's lock."""


@dataclass(frozen=True)
class CellStore:
    """A sweep's results folder: a local path, or a path inside a pyarrow filesystem."""

    root: str
    filesystem: Any = None  # None: the local filesystem (renames and locks)

    @classmethod
    def open(cls, out: str | Path) -> CellStore:
        text = str(out)
        if "://" not in text:
            return cls(str(Path(text).absolute()))  # workers may start in another directory
        import pyarrow.fs as pafs

        try:
            filesystem, path = pafs.FileSystem.from_uri(text)
        except Exception as exc:  # pyarrow raises several types for unknown schemes and bad URIs
            raise UserError(f"cannot open the results location {text}: {exc}; give a folder or a URI pyarrow "
                            "supports (file://, s3://, gs://, hdfs://)") from None
        if isinstance(filesystem, pafs.LocalFileSystem):
            return cls(path)
        return cls(path.rstrip("/"), filesystem)

    @property
    def local(self) -> bool:
        return self.filesystem is None

    def path(self, *parts: str) -> str:
        return "/".join(p for p in (self.root, *parts) if p)

    def prepare(self) -> None:
        """Create the folder (before any cell runs, so a bad --out fails early)."""
        try:
            if self.local:
                Path(self.root, LOCKS).mkdir(parents=True, exist_ok=True)
            else:
                self.filesystem.create_dir(self.root, recursive=True)
        except OSError as exc:
            raise UserError(f"cannot create the results folder {self.root}: {exc}; choose another --out") from None

    # -- reading ---------------------------------------------------------------------------
    def sidecar(self, name: str) -> dict | None:
        """The finished cell's sidecar, or None when the cell has no folder yet."""
        path = self.path(name, SIDECAR_FILE)
        try:
            if self.local:
                text = Path(path).read_text()
            else:
                with self.filesystem.open_input_stream(path) as fh:
                    text = fh.read().decode()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            if self.local or "not exist" not in str(exc).lower() and "not found" not in str(exc).lower():
                raise
            return None
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return None  # cannot happen with atomic writes; treat as unfinished and re-run

    def status(self, name: str) -> str | None:
        """``complete``, ``failed``, or None (never finished)."""
        sidecar = self.sidecar(name)
        return None if sidecar is None else sidecar.get("cell", {}).get("status", "failed")

    # -- writing ---------------------------------------------------------------------------
    @contextmanager
    def claim(self, name: str) -> Iterator[Path]:
        """Exclusive right to run cell ``name``: yields an empty local work folder.

        Raises :class:`Busy` when another process holds it. Call :meth:`commit` with the
        work folder inside the block to publish the cell; leaving without it discards it.
        """
        if not self.local:
            work = Path(tempfile.mkdtemp(prefix=f"gradbench-{name}-"))
            try:
                yield work
            finally:
                shutil.rmtree(work, ignore_errors=True)
            return
        import fcntl

        root = Path(self.root)
        fd = os.open(root / LOCKS / f"{name}.lock", os.O_CREAT | os.O_RDWR, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise Busy(name) from None
            for stale in root.glob(f".{name}.*"):  # left by a killed worker: nobody else can hold this cell
                shutil.rmtree(stale, ignore_errors=True)
            work = root / f".{name}.{secrets.token_hex(4)}.tmp"
            work.mkdir()
            try:
                yield work
            finally:
                shutil.rmtree(work, ignore_errors=True)  # gone already when committed
        finally:
            os.close(fd)  # releases the lock

    def commit(self, name: str, work: Path) -> None:
        """Publish a finished cell's folder, replacing an earlier failed attempt."""
        if not self.local:
            return self._upload(name, work)
        root = Path(self.root)
        final = root / name
        old = None
        if final.exists():
            old = root / f".{name}.{secrets.token_hex(4)}.old"
            os.rename(final, old)
        os.rename(work, final)
        _fsync_dir(root)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def _upload(self, name: str, work: Path) -> None:
        import pyarrow as pa

        files = sorted((p for p in work.rglob("*") if p.is_file()), key=lambda p: (p.name == SIDECAR_FILE, str(p)))
        fs = self.filesystem
        for file in files:  # the sidecar last: its presence marks the cell finished
            relative = file.relative_to(work)
            target = self.path(name, *relative.parts)
            parent = target.rsplit("/", 1)[0]
            fs.create_dir(parent, recursive=True)
            hidden = f"{parent}/.{relative.name}.{secrets.token_hex(4)}.tmp"
            with fs.open_output_stream(hidden) as out:
                out.write(file.read_bytes())
            try:
                fs.move(hidden, target)
            except pa.ArrowNotImplementedError:  # a store without moves: objects still appear whole when written
                fs.delete_file(hidden)
                with fs.open_output_stream(target) as out:
                    out.write(file.read_bytes())


def _fsync_dir(path: Path) -> None:
    """Make a rename durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
