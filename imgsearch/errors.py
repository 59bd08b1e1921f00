"""The one exception tree; `imgsearch.rpc.server.maps_errors` turns it into gRPC status codes."""


class ImgsearchError(Exception):
    """Root of every error imgsearch raises on purpose."""


class InvalidImageError(ImgsearchError):
    """The bytes are not an image we can read: empty, truncated, unknown format, degenerate size."""


class UnrecognisedImageError(InvalidImageError):
    """No decoder knows the bytes: for a file without an image suffix, not an image at all."""


class ImageTooLargeError(InvalidImageError):
    """The image would decode to more pixels than allowed (decompression-bomb guard)."""


class ListenError(ImgsearchError):
    """An address to serve on cannot be had: in use (another server), not local, or denied."""


class FolderError(ImgsearchError):
    """The folder to index cannot be: not a folder, missing with nothing indexed from it yet,
    or another folder than the one whose index the data directory holds."""


class ModelError(ImgsearchError):
    """The ONNX model is missing, does not meet the contract, or failed to run."""


class StoreUnavailableError(ImgsearchError):
    """The vector store cannot be reached or refused the operation."""


class StoreBusyError(StoreUnavailableError):
    """An embedded store is held by another process (its lock is taken)."""


class StoreMismatchError(ImgsearchError):
    """The existing collection was built with another descriptor (size or model)."""


class InvalidRequestError(ImgsearchError):
    """A request field is missing, malformed or out of range."""


class UnreadableFileError(InvalidRequestError):
    """A file of the folder that is not read: a link, not a regular file (FIFO, device), or
    larger than the limit."""


class OutsideFolderError(InvalidRequestError):
    """A path that is not inside the watched folder (traversal, absolute path, symlink escape)."""


class NotFoundError(ImgsearchError):
    """A request names a file that does not exist in the watched folder."""


class ServerUnreachableError(ImgsearchError):
    """No server answered at the address a client was given."""


class BusyError(ImgsearchError):
    """The work cannot be taken on now (the decode memory is in use): try again shortly."""


class CallEndedError(ImgsearchError):
    """The client's deadline passed or it cancelled: stop spending CPU on the call."""
