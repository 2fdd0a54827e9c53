"""Where queue files live, and how they are protected.

A queue file holds personal data (user ids, traits), so it is created 0600 in a 0700
directory under the user's own data directory, never in a shared temporary folder.
"""

from __future__ import annotations

import hashlib
import os
import stat
import sys
from pathlib import Path
from typing import Optional, Union

from .config import DEFAULT_ENDPOINT
from .errors import ConfigError, QueueError

__all__ = ["data_dir", "default_queue_path", "prepare_queue_path"]

APP_DIR = "durable-analytics"


def data_dir() -> Path:
    """The per-user data directory: XDG_DATA_HOME on Linux, its equivalent elsewhere."""
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = str(Path.home() / "Library" / "Application Support")
    else:
        base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / APP_DIR


def default_queue_path(write_key: str, endpoint: Optional[str] = None) -> Path:
    """One file per destination (write key and endpoint), named by a hash so the key itself
    never reaches the disk. Segment's own endpoint keeps the name a file for the write key
    alone had, so files written before the endpoint was part of the name are still found."""
    named = write_key if endpoint in (None, DEFAULT_ENDPOINT) else f"{write_key}\n{endpoint}"
    digest = hashlib.sha256(named.encode("utf-8")).hexdigest()[:16]
    return data_dir() / f"queue-{digest}.sqlite3"


def _make_private_dir(directory: Path) -> None:
    if directory.is_dir():
        return
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise QueueError(
            f"cannot create the queue directory {directory}: {exc.strerror or exc}; "
            "choose a writable location with queue_path="
        ) from exc


def _check_not_foreign_symlink(path: Path) -> None:
    """Refuse a symlink whose target belongs to someone else: a classic /tmp-style attack."""
    if not path.is_symlink():
        return
    target = path.resolve()
    if not target.exists():
        raise QueueError(f"{path} is a symlink to a missing file ({target}); remove the link")
    if hasattr(os, "getuid"):
        uid = os.getuid()
        for place in (target, target.parent):
            owner = place.stat().st_uid
            if owner != uid:
                raise QueueError(
                    f"refusing to open {path}: it is a symlink into {place}, owned by uid "
                    f"{owner}, not by you (uid {uid}); point queue_path at a file you own"
                )


def prepare_queue_path(
    queue_path: Optional[Union[str, os.PathLike]], write_key: str, endpoint: Optional[str] = None
) -> Path:
    """Resolve ``queue_path`` (or the default for ``write_key`` and ``endpoint``) and make it
    safe to open.

    The directory is created 0700 when missing and the file 0600 when new; an existing file's
    mode is left as its owner set it.
    """
    if queue_path is None:
        path = default_queue_path(write_key, endpoint)
    else:
        path = Path(os.fspath(queue_path)).expanduser()
        if not path.name or path.is_dir():
            raise ConfigError(
                f"queue_path={str(queue_path)!r} is a directory; give the path of the queue "
                "file itself, e.g. /var/lib/myapp/analytics.sqlite3"
            )
    _make_private_dir(path.parent)
    _check_not_foreign_symlink(path)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise QueueError(
            f"cannot open the queue file {path}: {exc.strerror or exc}; check its permissions "
            "or choose another location with queue_path="
        ) from exc
    try:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise ConfigError(f"queue_path {path} is a directory; give a file path")
    finally:
        os.close(fd)
    return path
