"""Publish one file over SFTP slowly (a sleep per 32 KiB chunk), for the kill-mid-upload test.

Usage: python slow_publish.py '<json>' with keys host, port, username, key_file,
known_hosts_file, remote_dir, local_path, remote_name, chunk_delay.
"""

from __future__ import annotations

import json
import sys
import time

from arb_pipeline.transport.sftp import SftpTransport


def main() -> None:
    cfg = json.loads(sys.argv[1])
    delay = float(cfg.pop("chunk_delay"))
    local_path, remote_name = cfg.pop("local_path"), cfg.pop("remote_name")
    with SftpTransport(**cfg, retries=0, progress=lambda sent, total: time.sleep(delay)) as transport:
        transport.publish(local_path, remote_name)


if __name__ == "__main__":
    main()
