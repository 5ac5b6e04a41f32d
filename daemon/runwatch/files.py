"""Opening files that people and jobs put in shared folders, where anything may sit."""

from __future__ import annotations

import errno
import os
import stat
from typing import BinaryIO


def open_regular(path: str) -> BinaryIO:
    """``path`` opened for reading, if it is a regular file: checked before it is opened,
    opened non-blocking (a FIFO swapped in meanwhile would block ``open`` until a writer
    came) and checked again on the open file. OSError otherwise."""
    if not stat.S_ISREG(os.stat(path).st_mode):  # a device is not even opened (a tape rewinds)
        raise OSError(errno.EINVAL, "not a regular file", path)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0)
                 | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise OSError(errno.EINVAL, "not a regular file", path)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
