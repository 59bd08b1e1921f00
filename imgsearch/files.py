"""Reading a file of the watched folder: a regular file, not through a link, without blocking,
bounded in size.

Path queries, the indexer and geometric verification all read files through here, so that a
FIFO, a device or a link to one, named like an image, cannot hang a worker (a FIFO blocks on
open and read), fill the memory (a device never ends) or be read whole when it is a video.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from imgsearch.errors import UnreadableFileError

_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def read_folder_file(path: Path, max_bytes: int) -> bytes:
    """The bytes of `path`, a regular file of at most `max_bytes`.

    Raises:
        FileNotFoundError: there is no such file (any more).
        UnreadableFileError: a symbolic link, not a regular file, or too large.
        OSError: the file system refused (permissions, I/O error).
    """
    try:
        fd = os.open(path, _FLAGS)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # O_NOFOLLOW on a link
            raise UnreadableFileError(f"{path.name} is a symbolic link: not followed") from exc
        raise
    with os.fdopen(fd, "rb", buffering=0) as file:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnreadableFileError(f"{path.name} is not a regular file")
        if info.st_size > max_bytes:
            raise UnreadableFileError(
                f"{path.name} is {info.st_size} bytes, over the limit of {max_bytes}"
            )
        chunks = []
        left = max_bytes + 1  # one more: a file that grew while read is refused, not cut
        while left > 0:
            chunk = file.read(min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
    if len(data) > max_bytes:
        raise UnreadableFileError(f"{path.name} grew past the limit of {max_bytes} bytes")
    return data
