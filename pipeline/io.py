"""All storage I/O, through fsspec, so local paths, file://, s3://, gs:// ... behave the same.

`Storage` holds the fsspec options (endpoint, region, profile, retries, ...) and is passed to every
stage, so each Ray worker builds its own filesystems from the same options: nothing works only on
the driver. Publishing is atomic everywhere: locally a temp file in the same directory renamed
into place (a write that fails, on a full disk say, removes its temp file); on object stores a
single PUT (or a completed multipart upload), so no reader ever sees half a file.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from pipeline.config import StorageConfig, redact
from pipeline.errors import LOCAL_UNWRITABLE, StorageError, storage_error

log = logging.getLogger(__name__)

S3_PROTOCOLS = ("s3", "s3a")


@dataclass(frozen=True)
class ShardFile:
    """One input shard: where it is, its path relative to INPUT, and a cheap version tag."""

    uri: str
    relpath: str
    size: int
    version: str  # mtime (local) or ETag/generation (object stores): changes when the file does


def join(base: str, relpath: str) -> str:
    return base.rstrip("/") + "/" + relpath.lstrip("/")


def protocol_of(uri: str) -> str:
    return uri.split("://", 1)[0] if "://" in uri else "file"


_PROTOCOL_ALIASES = {"s3a": "s3", "gcs": "gs", "abfs": "az", "local": "file"}


def location(uri: str) -> str:
    """Where a URI points, for telling whether two overlap: a local path made real (absolute,
    symlinks resolved), else `protocol://bucket/prefix` with `//` and trailing slashes dropped."""
    protocol = protocol_of(uri)
    rest = uri.split("://", 1)[1] if "://" in uri else uri
    if protocol in ("file", "local"):
        return os.path.realpath(os.path.expanduser(rest))
    return f"{_PROTOCOL_ALIASES.get(protocol, protocol)}://" + "/".join(p for p in rest.split("/") if p)


def _local_files(root: str) -> Iterator[str]:
    """Files under a local directory, following symlinked directories (fsspec's `find` does not),
    in a fixed order, each real directory and file once: a link back up the tree (a loop) or to
    a directory or file already listed is skipped with a warning, so no row is read twice."""
    real_root = os.path.realpath(root)
    seen: set[str] = set()
    for directory, dirs, files in os.walk(root, followlinks=True):
        real = os.path.realpath(directory)
        if real in seen or (directory != root and real_root.startswith(real.rstrip("/") + "/")):
            log.warning("skipping %s: it links to %s, already listed (or a loop)", directory, real)
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith(("_", ".")))
        for name in sorted(files):
            path = os.path.join(directory, name)
            if not name.endswith(".parquet") or name.startswith(("_", ".")):
                continue
            target = os.path.realpath(path)
            if not os.path.exists(target):
                raise FileNotFoundError(f"{path!r} is a broken symlink (to {target!r}); fix or remove it")
            if target in seen:
                log.warning("skipping %s: it links to %s, already listed", path, target)
                continue
            seen.add(target)
            yield path


def _version_tag(info: dict[str, Any]) -> str:
    for key in ("ETag", "etag", "generation", "mtime", "LastModified", "last_modified", "created"):
        if info.get(key) is not None:
            return f"{key}={info[key]}"
    return ""


def _is_hidden(relpath: str) -> bool:
    return any(part.startswith(("_", ".")) for part in relpath.split("/"))


@dataclass(frozen=True)
class Storage:
    """fsspec options per protocol; picklable, so it travels to every Ray worker."""

    options: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def from_section(cls, st: StorageConfig) -> Storage:
        """The Storage for a config's `storage` section (`rerank run` and `rerank finetune`)."""
        return cls.from_settings(
            endpoint_url=st.endpoint_url,
            region=st.region,
            profile=st.profile,
            anonymous=st.anonymous,
            max_attempts=st.max_attempts,
            extra=st.options,
        )

    @classmethod
    def from_settings(
        cls,
        endpoint_url: str | None = None,
        region: str | None = None,
        profile: str | None = None,
        anonymous: bool = False,
        max_attempts: int = 8,
        extra: dict[str, Any] | None = None,
        environ: dict[str, str] | None = None,
    ) -> Storage:
        """Options for s3:// (and the `extra` fsspec options for every remote protocol).

        The endpoint and region fall back to the standard AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL
        and AWS_REGION / AWS_DEFAULT_REGION variables *of the driver*, so that workers on other
        nodes use the same ones. Credentials are not copied: each worker uses the AWS credential
        chain of its node (env, profile, instance role) unless `extra` names keys.
        """
        env = os.environ if environ is None else environ
        endpoint_url = endpoint_url or env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
        region = region or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
        s3: dict[str, Any] = {
            # botocore's standard retry mode: throttling, 5xx and connection errors, exponential
            # backoff with jitter, bounded by max_attempts.
            "config_kwargs": {
                "retries": {"max_attempts": max_attempts, "mode": "standard"},
                "connect_timeout": 10,
                "read_timeout": 120,
            },
        }
        if endpoint_url:
            s3["endpoint_url"] = endpoint_url
        if region:
            s3["client_kwargs"] = {"region_name": region}
        if profile:
            s3["profile"] = profile
        if anonymous:
            s3["anon"] = True
        options = {p: {**s3, **(extra or {})} for p in S3_PROTOCOLS}
        options["*"] = dict(extra or {})  # any other remote protocol: gs://, az://, ...
        return cls(options)

    def redacted(self) -> dict[str, Any]:
        return {p: redact(o) for p, o in self.options.items() if o}

    def filesystem(self, uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
        """The filesystem for a URI (built from this Storage's options) and the path within it."""
        protocol = protocol_of(uri)
        if protocol in ("file", "local"):
            options: dict[str, Any] = {}
        else:
            options = self.options.get(protocol, self.options.get("*", {}))
        fs, path = fsspec.core.url_to_fs(uri, **options)
        return fs, path

    def is_local(self, uri: str) -> bool:
        return isinstance(self.filesystem(uri)[0], LocalFileSystem)

    def _to_uri(self, fs: fsspec.AbstractFileSystem, path: str) -> str:
        return path if isinstance(fs, LocalFileSystem) else fs.unstrip_protocol(path)

    def list_shards(self, uri: str) -> list[ShardFile]:
        """Lists Parquet shards under `uri` (or `uri` itself if it is a file) in a fixed order.

        One recursive listing; skips non-Parquet objects and any path part starting with '_' or
        '.' (bookkeeping, temp files). Relative paths are what output shards are named after.
        """
        fs, root = self.filesystem(uri)
        fs.invalidate_cache()
        if root.endswith(".parquet") and fs.isfile(root):
            info = fs.info(root)
            name = root.rsplit("/", 1)[-1]
            return [ShardFile(self._to_uri(fs, root), name, int(info.get("size") or 0), _version_tag(info))]
        if isinstance(fs, LocalFileSystem):  # follows symlinked directories, unlike find
            found = {path: fs.info(path) for path in _local_files(root.rstrip("/") or "/")}
        else:
            found = fs.find(root, detail=True)
        root = root.rstrip("/")
        shards = []
        for path, info in sorted(found.items()):
            rel = path[len(root) :].lstrip("/")
            if not rel.endswith(".parquet") or _is_hidden(rel):
                continue
            size = int(info.get("size") or 0)
            shards.append(ShardFile(self._to_uri(fs, path), rel, size, _version_tag(info)))
        return shards

    def read_parquet_schema(self, uri: str) -> tuple[pa.Schema, int]:
        """Schema and row count from the Parquet footer, without reading any data."""
        fs, path = self.filesystem(uri)
        with fs.open(path, "rb") as f:
            meta = pq.ParquetFile(f).metadata
            return meta.schema.to_arrow_schema(), meta.num_rows

    def read_footer_and_columns(
        self, uri: str, pick: Callable[[pa.Schema], list[str]]
    ) -> tuple[pa.Schema, int, pa.Table]:
        """Schema, row count and the columns `pick(schema)` names, from one open of the file (a
        second open and `pq.read_table`'s dataset layer cost 3-6x as much per shard: planning
        reads this of every pending shard)."""
        fs, path = self.filesystem(uri)
        with fs.open(path, "rb") as f:
            pf = pq.ParquetFile(f)
            schema = pf.schema_arrow
            return schema, pf.metadata.num_rows, pf.read(columns=pick(schema))

    def read_table(self, uri: str, columns: list[str] | None = None) -> pa.Table:
        fs, path = self.filesystem(uri)
        with fs.open(path, "rb") as f:
            return pq.read_table(f, columns=columns)

    def iter_row_groups(self, uri: str, columns: list[str]) -> Iterator[pa.Table]:
        """Streams a shard one row group at a time, so a big shard is never held whole."""
        fs, path = self.filesystem(uri)
        with fs.open(path, "rb") as f:
            pf = pq.ParquetFile(f)
            for i in range(pf.num_row_groups):
                yield pf.read_row_group(i, columns=columns)

    def _put_atomic(self, uri: str, data: bytes, exclusive: bool = False) -> bool:
        """Writes `data` at `uri` whole or not at all. `exclusive` (local paths only): only if
        nothing is there yet; False if something was."""
        fs, path = self.filesystem(uri)
        if isinstance(fs, LocalFileSystem):
            return _put_local(path, data, exclusive)
        if exclusive:
            raise ValueError(f"exclusive writes are for local paths; {uri} is not one")
        # One PUT (a multipart upload for big objects, completed only at the end): an object
        # store shows the new object only once it is whole.
        fs.pipe_file(path, data)
        return True

    def create_json_local(self, uri: str, obj: Any) -> bool:
        """Creates the JSON document at local `uri` atomically if there is none; False if there was."""
        return self._put_atomic(uri, json.dumps(obj, indent=1, sort_keys=True).encode(), exclusive=True)

    def write_parquet_atomic(self, uri: str, table: pa.Table) -> int:
        """Publishes `table` at `uri` in one atomic step. Returns bytes written."""
        buf = io.BytesIO()
        pq.write_table(table, buf, compression="zstd")
        data = buf.getvalue()
        self._put_atomic(uri, data)
        return len(data)

    def write_json_atomic(self, uri: str, obj: Any) -> None:
        self._put_atomic(uri, json.dumps(obj, indent=1, sort_keys=True).encode())

    def write_text_atomic(self, uri: str, text: str) -> None:
        """Publishes a UTF-8 text file (the run report's HTML) in one atomic step."""
        self._put_atomic(uri, text.encode())

    def read_text(self, uri: str) -> str:
        """A UTF-8 text file (undecodable bytes replaced)."""
        fs, path = self.filesystem(uri)
        with fs.open(path, "rb") as f:
            return f.read().decode(errors="replace")

    def read_json(self, uri: str) -> Any | None:
        """The JSON document at `uri`, or None if there is none."""
        fs, path = self.filesystem(uri)
        try:
            with fs.open(path, "rb") as f:
                return json.loads(f.read())
        except FileNotFoundError:
            return None

    def list_files(self, uri: str) -> list[str]:
        """Paths (relative to `uri`) of every file below it; empty if it does not exist."""
        fs, root = self.filesystem(uri)
        fs.invalidate_cache()
        if not fs.exists(root):
            return []
        root = root.rstrip("/")
        return sorted(p[len(root) :].lstrip("/") for p in fs.find(root))

    def remove(self, uri: str) -> None:
        fs, path = self.filesystem(uri)
        fs.invalidate_cache()
        if fs.exists(path):
            fs.rm(path, recursive=True)

    def remove_files(self, uri: str, relpaths: list[str]) -> None:
        """Removes the files at these paths relative to `uri` (nothing else)."""
        fs, root = self.filesystem(uri)
        if relpaths:
            fs.rm([join(root, rel) for rel in relpaths])

    def get_directory(self, uri: str, local_dir: str) -> None:
        """Copies every file under `uri` into `local_dir` (which must not exist yet)."""
        fs, root = self.filesystem(uri)
        root = root.rstrip("/")
        files = fs.find(root)
        if not files:
            raise FileNotFoundError(f"nothing under {uri}")
        for path in files:
            target = os.path.join(local_dir, path[len(root) :].lstrip("/"))
            os.makedirs(os.path.dirname(target), exist_ok=True)
            fs.get_file(path, target)

    def check_root(self, uri: str, role: str) -> None:
        """Fails fast with a StorageError if the bucket/container of `uri` cannot be used, or a local
        `uri` is a file or cannot be written."""
        fs, path = self.filesystem(uri)
        if isinstance(fs, LocalFileSystem):
            _check_local_root(uri, path, role)
            return
        bucket = path.split("/", 1)[0]
        try:  # ls, not exists: exists() answers False for an unreachable endpoint or denied access
            fs.invalidate_cache()
            fs.ls(bucket, refresh=True)
        except FileNotFoundError:
            raise StorageError(
                f"{role} {uri!r}: bucket {bucket!r} does not exist (or is not visible with these "
                "credentials); create it or fix the URI"
            ) from None
        except Exception as e:
            raise storage_error(uri, role, e) from e


def _check_local_root(uri: str, path: str, role: str) -> None:
    """A local directory to write into: not a file, and writable (or creatable) by this user."""
    if os.path.isfile(path):
        raise StorageError(f"{role} {uri!r} is a file, not a directory; pass a directory (new or empty)")
    existing = path
    while not os.path.exists(existing):  # the nearest ancestor that exists is where it gets created
        existing = os.path.dirname(existing.rstrip("/")) or "/"
    if not os.path.isdir(existing):
        raise StorageError(f"{role} {uri!r}: {existing!r} is a file, so the directory cannot be created")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise StorageError(f"{role} {uri!r}: {LOCAL_UNWRITABLE.format(path=existing)}")


def _put_local(path: str, data: bytes, exclusive: bool) -> bool:
    """`Storage._put_atomic` on a local path: a temp file in the same directory, synced, then
    renamed (or, `exclusive`, linked) into place. A write that fails (a full disk) removes its temp
    file, so that its space is free for the writes after it."""
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".tmp-{uuid.uuid4().hex}-{os.path.basename(path)}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if not exclusive:
            os.replace(tmp, path)
            return True
        try:
            os.link(tmp, path)  # fails if `path` exists: a create-if-absent no rename gives
        except FileExistsError:
            return False
        return True
    finally:
        with contextlib.suppress(OSError):  # gone already once renamed into place
            os.remove(tmp)
