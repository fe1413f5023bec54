"""What a report carries: free-text message, client JSON, and optionally an image file.

Pure functions of a seeded ``random.Random`` so the workload's draws are reproducible;
the awkward cases (unicode, newlines, backslashes, mixed-case image extensions, both
spellings of the bus-stop key) are here on purpose, as the pipeline must carry them intact.
"""

from __future__ import annotations

import json
import os
import random
from datetime import datetime
from pathlib import Path

from arb_pipeline.dev.generator.common import APP_TZ, jitter
from arb_pipeline.dev.generator.vocab import IMAGE_EXTENSIONS, MESSAGE_PARTS

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00"
JPEG_END = b"\xff\xd9"


def message(rng: random.Random) -> str:
    """One to three fragments joined by spaces, newlines or CRLF."""
    parts = rng.sample(MESSAGE_PARTS, rng.randint(1, 3))
    return rng.choice((" ", "\n", "\r\n", " \\ ")).join(parts)


def report_info(
    rng: random.Random, *, user_point: tuple[float, float], bus: dict | None = None, stop: dict | None = None
) -> str:
    """The client's reportInfo JSON: locationUser plus a bus, bus_stop or busStop object.

    Clients differed: some sent the stop under ``bus_stop``, others ``busStop``; some kept
    non-ASCII characters as is, others escaped them.
    """
    info: dict = {"locationUser": {"latitude": user_point[1], "longitude": user_point[0]}}
    if bus is not None:
        lon, lat = jitter(rng, *user_point, 30)
        info["bus"] = {
            "licensePlate": bus["plate"],
            "machineId": bus["uuid"],
            "service": bus["service"],
            "latitude": lat,
            "longitude": lon,
        }
    else:
        key = rng.choice(("bus_stop", "busStop"))
        info[key] = {
            "id": stop["code"],
            "name": stop["name"],
            "latitude": stop["lat"],
            "longitude": stop["lon"],
        }
    return json.dumps(info, ensure_ascii=rng.random() < 0.5)


def image_choice(rng: random.Random) -> tuple[str, bytes]:
    """An extension (mixed case) and deterministic bytes with a valid PNG or JPEG header."""
    ext = rng.choice(IMAGE_EXTENSIONS)
    payload = rng.randbytes(rng.randint(256, 4096))
    if ext.lower() == "png":
        return ext, PNG_MAGIC + payload
    return ext, JPEG_MAGIC + payload + JPEG_END


def image_name(report_id: int, when: datetime, ext: str) -> str:
    """``<report id>_<HH-MM-SS_YYYY-MM-DD>.<ext>``, wall-clock time in the app's zone."""
    return f"{report_id}_{when.astimezone(APP_TZ):%H-%M-%S_%Y-%m-%d}.{ext}"


def write_image(media_dir: Path, name: str, data: bytes) -> Path:
    """Write the file through a temporary name, so a reader never sees a partial image."""
    media_dir.mkdir(parents=True, exist_ok=True)
    path = media_dir / name
    tmp = media_dir / f".{name}.tmp"
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return path
