"""Moving backup files to the receiver's inbox: a local folder or SFTP, one interface."""

from arb_pipeline.transport.base import TEMP_PREFIX, TEMP_SUFFIX, Transport, TransportError, is_temporary_name
from arb_pipeline.transport.local import LocalFolderTransport
from arb_pipeline.transport.sftp import SftpTransport

__all__ = [
    "SftpTransport",
    "TEMP_PREFIX",
    "TEMP_SUFFIX",
    "Transport",
    "TransportError",
    "is_temporary_name",
    "LocalFolderTransport",
]
