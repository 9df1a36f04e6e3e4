"""Files and directories the connector writes, private to the gateway's account whatever the umask.

Directories it creates are 0700 and files it writes 0600 (ADR 0024; issue 11, item 7): the data
directory, ``<data_dir>/run/ports.json``, the watched folders' ``processed/`` and ``failed/`` with the
files moved there and their ``.reason.txt``, the DMP request dumps of ``passerelle map --transport
dmp``. The journal and audit files get the same modes from the journal (``queue/_sqlite_db.py``). A
directory that already exists belongs to the operator and is left as it is.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path) -> Path:
    """``path`` as a directory; the missing ones on the way are created 0700 (the umask filters
    ``mkdir``'s mode, hence the explicit ``chmod``)."""
    for directory in reversed([p for p in (path, *path.parents) if not p.exists()]):
        with contextlib.suppress(FileExistsError):  # made meanwhile by another process: theirs
            directory.mkdir(mode=DIR_MODE)
            os.chmod(directory, DIR_MODE)
    return path


def write_private(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` 0600, atomically: a reader sees the old file or the new one, whole."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), FILE_MODE)
    with os.fdopen(fd, "wb") as out:
        os.fchmod(out.fileno(), FILE_MODE)  # O_CREAT's mode is filtered by the umask; an old tmp kept its own
        out.write(data)
    os.replace(tmp, path)
    return path


def make_private(path: Path) -> None:
    """Restrict a file the gateway took over (moved into ``processed/`` or ``failed/``) to 0600. A file
    another account owns keeps its mode (only its owner may change it); its 0700 directory guards it."""
    if not path.is_symlink():
        with contextlib.suppress(PermissionError):
            os.chmod(path, FILE_MODE)
