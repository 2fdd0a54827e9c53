"""Where queue files live and how they are protected: private modes, hashed names, refusals."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from durable_analytics.errors import ConfigError, QueueError
from durable_analytics.paths import data_dir, default_queue_path, prepare_queue_path
from durable_analytics.store import MessageStore

WRITE_KEY = "wk_live_SECRETsecret123"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(autouse=True)
def _usual_umask() -> Iterator[None]:
    """Modes must come from the code, not from a permissive umask."""
    old = os.umask(0o022)
    yield
    os.umask(old)


@pytest.mark.skipif(sys.platform != "linux", reason="XDG_DATA_HOME is the Linux location")
def test_default_path_is_private_under_xdg_data_home_and_hashed() -> None:
    xdg = Path(os.environ["XDG_DATA_HOME"])
    path = default_queue_path(WRITE_KEY)
    assert data_dir() == xdg / "durable-analytics"
    assert path.parent == xdg / "durable-analytics"
    assert path.name.startswith("queue-") and path.suffix == ".sqlite3"
    assert WRITE_KEY not in str(path) and "SECRET" not in str(path)
    assert default_queue_path(WRITE_KEY) == path
    assert default_queue_path(WRITE_KEY + "x") != path

    store = MessageStore.open(None, WRITE_KEY)
    try:
        store.append('{"n": 1}')
        assert store.file == path
        assert mode(path.parent) == 0o700
        assert mode(path) == 0o600
        for extra in ("-wal", "-shm"):
            companion = Path(f"{path}{extra}")
            assert companion.exists() and mode(companion) == 0o600, extra
        assert not any(WRITE_KEY in name for name in os.listdir(path.parent))
    finally:
        store.close()


def test_queue_path_is_the_file_and_its_missing_directory_is_made_private(
    tmp_path: Path,
) -> None:
    target = tmp_path / "app" / "state" / "events.db"
    assert prepare_queue_path(target, WRITE_KEY) == target
    assert mode(target.parent) == 0o700 and mode(target) == 0o600
    assert target.stat().st_size == 0  # created empty; SQLite fills it on first open


def test_existing_directory_mode_and_file_are_left_alone(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o750)
    os.chmod(shared, 0o750)
    target = shared / "q.sqlite3"
    target.write_bytes(b"")
    os.chmod(target, 0o640)
    prepare_queue_path(target, WRITE_KEY)
    assert (mode(shared), mode(target)) == (0o750, 0o640)


def test_queue_path_that_is_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        MessageStore.open(tmp_path)
    assert "is a directory; give the path of the queue file itself" in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def _foreign_target(tmp_path: Path) -> Path:
    """A queue file in a directory belonging to another user."""
    if os.getuid() == 0:
        theirs = tmp_path / "theirs"
        theirs.mkdir()
        target = theirs / "q.sqlite3"
        target.write_bytes(b"")
        os.chown(theirs, 65534, 65534)
        os.chown(target, 65534, 65534)
        return target
    target = Path("/etc/hostname")  # not root: any existing root-owned file will do
    if not target.exists() or target.stat().st_uid == os.getuid():
        pytest.skip("no file owned by another user to point a symlink at")
    return target


def test_symlink_into_another_users_directory_is_refused(tmp_path: Path) -> None:
    target = _foreign_target(tmp_path)
    before = target.read_bytes()
    link = tmp_path / "mine" / "q.sqlite3"
    link.parent.mkdir(mode=0o700)
    link.symlink_to(target)

    with pytest.raises(QueueError) as caught:
        MessageStore.open(link)

    text = str(caught.value)
    assert f"refusing to open {link}: it is a symlink into" in text
    assert "owned by uid" in text and "point queue_path at a file you own" in text
    assert target.read_bytes() == before


def test_symlink_to_own_file_is_accepted(tmp_path: Path) -> None:
    real = tmp_path / "real" / "q.sqlite3"
    real.parent.mkdir()
    link = tmp_path / "link.sqlite3"
    link.symlink_to(real)
    real.write_bytes(b"")
    store = MessageStore.open(link)
    try:
        store.append('{"n": 1}')
    finally:
        store.close()
    assert real.stat().st_size > 0


def test_dangling_symlink_is_refused(tmp_path: Path) -> None:
    link = tmp_path / "q.sqlite3"
    link.symlink_to(tmp_path / "gone" / "q.sqlite3")
    with pytest.raises(QueueError, match="is a symlink to a missing file"):
        MessageStore.open(link)


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs /proc")
def test_directory_that_cannot_be_created_is_a_queue_error() -> None:
    """/proc refuses new entries even to root."""
    with pytest.raises(QueueError) as caught:
        MessageStore.open("/proc/durable-analytics-test/q.sqlite3")
    text = str(caught.value)
    assert "cannot create the queue directory /proc/durable-analytics-test" in text
    assert "choose a writable location with queue_path=" in text


READ_ONLY_CHILD = """
import sys
from durable_analytics.errors import QueueError
from durable_analytics.store import MessageStore
for name in ("existing.sqlite3", "new.sqlite3"):
    try:
        MessageStore.open(sys.argv[1] + "/" + name).append("{}")
        print("stored", name)
    except QueueError as exc:
        print(type(exc).__name__, exc)
"""


@pytest.mark.skipif(
    sys.platform != "linux" or shutil.which("unshare") is None, reason="needs Linux unshare"
)
def test_read_only_directory_is_a_clear_queue_error(tmp_path: Path, child_env: dict) -> None:
    """Root ignores permission bits, so the directory is made read-only by a read-only bind
    mount, in a private mount namespace that vanishes with the child."""
    place = tmp_path / "ro"
    place.mkdir()
    existing = MessageStore.open(place / "existing.sqlite3")
    existing.append('{"n": 1}')
    existing.close()
    script = (
        'mount --bind "$1" "$1" && mount -o remount,ro,bind "$1" || exit 77; exec "$2" -c "$3" "$1"'
    )
    result = subprocess.run(
        ["unshare", "-m", "sh", "-c", script, "sh", str(place), sys.executable, READ_ONLY_CHILD],
        env=child_env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    if result.returncode == 77 or "unshare failed" in result.stderr:
        pytest.skip(f"cannot make a read-only mount here: {result.stderr.strip()}")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2, result.stdout
    for line, name in zip(lines, ("existing.sqlite3", "new.sqlite3")):
        assert line.startswith("QueueError "), line
        assert f"{place / name}" in line and "Read-only file system" in line
        assert "choose another location with queue_path=" in line
    assert not (place / "new.sqlite3").exists()
    reopened = MessageStore.open(place / "existing.sqlite3")
    assert reopened.stats().ready == 1
    reopened.close()
