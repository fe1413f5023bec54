"""A local folder behind the transport interface: the one-machine demo and unit tests."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from arb_pipeline.transport.base import TransportError, check_relative, temporary_name


class LocalFolderTransport:
    def __init__(self, root: Path | str):
        self.root = Path(root)

    def _path(self, remote_name: str) -> Path:
        return self.root.joinpath(*check_relative(remote_name).parts)

    def publish(self, local_path: Path, remote_name: str) -> None:
        final = self._path(remote_name)
        tmp = self._path(temporary_name(remote_name))
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            with open(local_path, "rb") as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
                dst.flush()
                os.fsync(dst.fileno())
            os.replace(tmp, final)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise TransportError(
                f"cannot publish {remote_name} into local folder {self.root}: {exc}"
            ) from exc

    def listdir(self, remote_dir: str = "") -> list[str]:
        path = self._path(remote_dir) if remote_dir else self.root
        try:
            return sorted(os.listdir(path))
        except FileNotFoundError:
            return []

    def read_bytes(self, remote_name: str) -> bytes:
        return self._path(remote_name).read_bytes()

    def remove(self, remote_name: str) -> None:
        self._path(remote_name).unlink(missing_ok=True)

    def check_writable(self) -> None:
        probe = self.root / f".arb-write-check-{os.getpid()}"
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise TransportError(
                f"the local inbox folder {self.root} is not writable: {exc}. "
                "Check ARB_INBOX_DIR and the folder's owner"
            ) from exc

    def server_key(self) -> str:
        return "(local folder: no host key)"

    def disk_free(self) -> int | None:
        folder = self.root
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        return shutil.disk_usage(folder).free

    def close(self) -> None:
        pass

    def __enter__(self) -> "LocalFolderTransport":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
