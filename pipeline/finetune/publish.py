"""Publishing the fine-tuned model directory atomically, through `Storage`.

Locally: the files are copied into a temp directory next to OUTPUT, which is then renamed into
place (one rename: readers see no model or the whole model). On object stores (no rename): every
file is PUT, and `finetune_report.json` last — it is the completion marker; a reader (and a rerun)
treats OUTPUT as a model only once it exists.
"""

from __future__ import annotations

import os
import shutil
import uuid
from typing import Any

from fsspec.implementations.local import LocalFileSystem

from pipeline.io import Storage, join

REPORT = "finetune_report.json"


def publish_model(storage: Storage, local_dir: str, uri: str, report: dict[str, Any]) -> None:
    """Publishes every file of `local_dir` and the report at `uri` (which must not hold a model)."""
    fs, path = storage.filesystem(uri)
    if isinstance(fs, LocalFileSystem):
        path = path.rstrip("/")
        staging = f"{path}.tmp-{uuid.uuid4().hex}"
        shutil.copytree(local_dir, staging)
        storage.write_json_atomic(join(staging, REPORT), report)
        if os.path.isdir(path) and not os.listdir(path):
            os.rmdir(path)
        os.replace(staging, path)
        return
    for root, _, files in os.walk(local_dir):
        for name in sorted(files):
            local = os.path.join(root, name)
            fs.put_file(local, join(path, os.path.relpath(local, local_dir)))
    storage.write_json_atomic(join(uri, REPORT), report)  # the completion marker, written last
