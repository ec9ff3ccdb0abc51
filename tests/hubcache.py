"""A Hub cache laid out as huggingface_hub writes it (blobs, a snapshot of symlinks,
refs/main), filled from local model folders, for tests that must not reach the network."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def populate_hub_cache(cache: Path, repo_id: str, folder: Path, commit: str | None = None) -> str:
    """Put every file of ``folder`` into ``cache`` as snapshot ``commit`` of ``repo_id``
    (refs/main points at it). Returns the commit hash."""
    commit = commit or hashlib.sha1(repo_id.encode()).hexdigest()
    repo_dir = cache / f"models--{repo_id.replace('/', '--')}"
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs" / "main").write_text(commit)
    snapshot = repo_dir / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo_dir / "blobs").mkdir(exist_ok=True)
    for file in sorted(p for p in folder.iterdir() if p.is_file()):
        content = file.read_bytes()
        blob = repo_dir / "blobs" / hashlib.sha256(content).hexdigest()
        blob.write_bytes(content)
        (snapshot / file.name).symlink_to(os.path.relpath(blob, snapshot))
    return commit
