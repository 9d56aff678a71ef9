"""All storage I/O, through fsspec, so local paths, file:// and s3:// behave the same.

Publishing is atomic everywhere: locally a temp file in the same directory renamed into place; on
object stores a single PUT (or a completed multipart upload), so no reader ever sees half a file.
"""

from __future__ import annotations

import io
import json
import logging
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ShardFile:
    """One input shard: where it is, its path relative to INPUT, and a cheap version tag."""

    uri: str
    relpath: str
    size: int
    version: str  # mtime (local) or ETag/generation (object stores): changes when the file does


def filesystem(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem for a URI and the path within it."""
    fs, path = fsspec.core.url_to_fs(uri)
    return fs, path


def is_local(uri: str) -> bool:
    return isinstance(filesystem(uri)[0], LocalFileSystem)


def join(base: str, relpath: str) -> str:
    return base.rstrip("/") + "/" + relpath.lstrip("/")


def _to_uri(fs: fsspec.AbstractFileSystem, path: str) -> str:
    return path if isinstance(fs, LocalFileSystem) else fs.unstrip_protocol(path)


def _version_tag(info: dict[str, Any]) -> str:
    for key in ("ETag", "etag", "generation", "mtime", "LastModified", "last_modified", "created"):
        if info.get(key) is not None:
            return f"{key}={info[key]}"
    return ""


def _is_hidden(relpath: str) -> bool:
    return any(part.startswith(("_", ".")) for part in relpath.split("/"))


def list_shards(uri: str) -> list[ShardFile]:
    """Lists Parquet shards under `uri` (or `uri` itself if it is a file) in a fixed order.

    One recursive listing; skips non-Parquet objects and any path part starting with '_' or '.'
    (bookkeeping, temp files). Relative paths are what output shards are named after.
    """
    fs, root = filesystem(uri)
    if fs.isfile(root):
        info = fs.info(root)
        name = root.rsplit("/", 1)[-1]
        return [ShardFile(_to_uri(fs, root), name, int(info.get("size") or 0), _version_tag(info))]
    found = fs.find(root, detail=True)
    root = root.rstrip("/")
    shards = []
    for path, info in sorted(found.items()):
        rel = path[len(root) :].lstrip("/")
        if not rel.endswith(".parquet") or _is_hidden(rel):
            continue
        shards.append(ShardFile(_to_uri(fs, path), rel, int(info.get("size") or 0), _version_tag(info)))
    return shards


def read_parquet_schema(uri: str) -> tuple[pa.Schema, int]:
    """Schema and row count from the Parquet footer, without reading any data."""
    fs, path = filesystem(uri)
    with fs.open(path, "rb") as f:
        meta = pq.ParquetFile(f).metadata
        return meta.schema.to_arrow_schema(), meta.num_rows


def read_table(uri: str, columns: list[str] | None = None) -> pa.Table:
    fs, path = filesystem(uri)
    with fs.open(path, "rb") as f:
        return pq.read_table(f, columns=columns)


def iter_row_groups(uri: str, columns: list[str]) -> Iterator[pa.Table]:
    """Streams a shard one row group at a time, so a big shard is never held whole."""
    fs, path = filesystem(uri)
    with fs.open(path, "rb") as f:
        pf = pq.ParquetFile(f)
        for i in range(pf.num_row_groups):
            yield pf.read_row_group(i, columns=columns)


def _put_atomic(uri: str, data: bytes) -> None:
    fs, path = filesystem(uri)
    if isinstance(fs, LocalFileSystem):
        directory = os.path.dirname(path)
        os.makedirs(directory, exist_ok=True)
        tmp = os.path.join(directory, f".tmp-{uuid.uuid4().hex}-{os.path.basename(path)}")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    else:
        # One request: an object store shows the new object only once it is whole.
        fs.pipe_file(path, data)


def write_parquet_atomic(uri: str, table: pa.Table) -> int:
    """Publishes `table` at `uri` in one atomic step. Returns bytes written."""
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    data = buf.getvalue()
    _put_atomic(uri, data)
    return len(data)


def write_json_atomic(uri: str, obj: Any) -> None:
    _put_atomic(uri, json.dumps(obj, indent=1, sort_keys=True).encode())


def read_json(uri: str) -> Any | None:
    """The JSON document at `uri`, or None if there is none."""
    fs, path = filesystem(uri)
    try:
        with fs.open(path, "rb") as f:
            return json.loads(f.read())
    except FileNotFoundError:
        return None


def list_files(uri: str) -> list[str]:
    """Paths (relative to `uri`) of every file below it; empty if it does not exist."""
    fs, root = filesystem(uri)
    if not fs.exists(root):
        return []
    root = root.rstrip("/")
    return sorted(p[len(root) :].lstrip("/") for p in fs.find(root))


def remove(uri: str) -> None:
    fs, path = filesystem(uri)
    if fs.exists(path):
        fs.rm(path, recursive=True)
