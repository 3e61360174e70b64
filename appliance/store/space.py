"""Disk space around the database: the ballast, the WAL's checkpoint size, the filesystem's
share and the files' identity.

Why apart from the connections: all of it is ``stat``/``statvfs`` on data_dir's filesystem,
asked by the appliance's storage watch (disk full, files replaced underneath) and by the
connection setup, none of it SQL.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

# The database's page size for a new file (see Store's connection setup for why 32 KiB).
PAGE_SIZE = 32_768
WAL_CHECKPOINT_BYTES = 4 * 1024 * 1024

# The ballast (reserve.bin) is at most this share of data_dir's filesystem: a fixed 16 MiB
# never fits on a small one (it is only taken with twice its size free), and then a full disk
# has no room left for the deletes and checkpoints that make room.
RESERVE_FS_SHARE = 0.05
# Disk full and the database holds less than this share of the filesystem: something else
# filled it. Deleting the appliance's own history would not make lasting room, so it waits.
SHED_MIN_FS_SHARE = 0.5


def file_id(path: Path) -> tuple[int, int] | None:
    """``(st_dev, st_ino)`` of ``path``, ``None`` when it does not exist."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_dev, st.st_ino)


def wal_checkpoint_bytes(directory: Path) -> int:
    """WAL size that triggers a checkpoint: 4 MiB, or 1/32 of a small filesystem. A
    checkpoint grows the database file by up to that much, so on a small filesystem a
    4 MiB WAL alone could take the room its own checkpoint needs."""
    try:
        st = os.statvfs(directory)
    except OSError:
        return WAL_CHECKPOINT_BYTES
    return max(PAGE_SIZE, min(WAL_CHECKPOINT_BYTES, st.f_blocks * st.f_frsize // 32))


def files_size(db_path: Path) -> int:
    """The database file plus its WAL on disk."""
    total = 0
    for suffix in ("", "-wal"):
        with contextlib.suppress(OSError):
            total += Path(str(db_path) + suffix).stat().st_size
    return total


def fs_share(directory: Path, used: int) -> float:
    """Share of ``directory``'s filesystem that ``used`` bytes take."""
    try:
        st = os.statvfs(directory)
    except OSError:
        return 1.0
    total = st.f_blocks * st.f_frsize
    return used / total if total else 1.0


def free_bytes(directory: Path) -> int:
    try:
        st = os.statvfs(directory)
    except OSError:
        return 0
    return st.f_bavail * st.f_frsize


class Ballast:
    """A file of ``size`` bytes held on disk so a full disk still has room for the deletes
    and checkpoints that make room: released when the disk is full, retaken after."""

    def __init__(self, path: Path, size: int) -> None:
        self.path = path
        self.size = size

    def effective(self) -> int:
        """``size``, capped at :data:`RESERVE_FS_SHARE` of the filesystem."""
        if self.size <= 0:
            return 0
        try:
            st = os.statvfs(self.path.parent)
        except OSError:
            return self.size
        return min(self.size, int(st.f_blocks * st.f_frsize * RESERVE_FS_SHARE))

    def ensure(self) -> bool:
        """Hold the ballast (:meth:`effective`) on disk; ``False`` if there is no room.

        The ballast is only taken back when the filesystem has at least twice its size free,
        so retaking it never starves the WAL that inserts need right after shedding.
        """
        size = self.effective()
        if size <= 0:
            return True
        path = self.path
        try:
            if path.exists() and path.stat().st_size >= size:
                return True
            st = os.statvfs(path.parent)
            if st.f_bavail * st.f_frsize < 2 * size:
                return False
            with path.open("wb") as f:
                os.posix_fallocate(f.fileno(), 0, size)
            return True
        except OSError:
            path.unlink(missing_ok=True)
            return False

    def release(self) -> bool:
        """Give the ballast back to the filesystem (disk full); ``True`` if there was one."""
        try:
            self.path.unlink()
            return True
        except FileNotFoundError:
            return False
