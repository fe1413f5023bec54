"""Media: bundling on the sender, safe all-or-nothing install on the receiver (promises 3 and 5)."""

from __future__ import annotations

import hashlib
import io
import logging
import os
import tarfile
import tracemalloc
from pathlib import Path

import pytest

from arb_pipeline.extract.media import NOT_FOUND, UNSAFE_NAME, bundle_all_media, bundle_media
from arb_pipeline.package.manifest import MediaEntry
from arb_pipeline.package.media import MediaError, is_safe_name
from arb_pipeline.package.writer import StagedBackup
from arb_pipeline.receive.media import install_media


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def dirs(tmp_path):
    sender, receiver, staging = tmp_path / "sender_media", tmp_path / "receiver_media", tmp_path / "staging"
    sender.mkdir()
    receiver.mkdir()
    return sender, receiver, StagedBackup(staging)


IMAGES = {
    "12_04-15-26_2026-11-26.JPG": b"\xff\xd8jpg upper" * 50,
    "13_04-16-00_2026-11-26.jpeg": b"\xff\xd8jpeg lower" * 70,
    "14_04-17-00_2026-11-26.Png": b"\x89PNG mixed" * 30,
}


def write_images(folder: Path, images=IMAGES) -> None:
    for name, data in images.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)


def tree(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


# ------------------------------------------------------------------------ sender


def test_mixed_case_extensions_bundled(dirs):
    sender, _, staged = dirs
    write_images(sender)
    bundle = bundle_media(sender, list(IMAGES) + ["12_04-15-26_2026-11-26.JPG", ""], staged)
    assert [f.name for f in bundle.files] == sorted(IMAGES)
    assert {f.name: (f.bytes, f.sha256) for f in bundle.files} == {
        n: (len(d), sha(d)) for n, d in IMAGES.items()
    }
    assert bundle.missing == []
    assert bundle.entry.kind == "media" and bundle.entry.rows == 3 and bundle.entry.name == "media.tar"
    assert staged.entries == [bundle.entry]
    tar_path = staged.path("media.tar")
    assert (bundle.entry.bytes, bundle.entry.sha256) == (tar_path.stat().st_size, sha(tar_path.read_bytes()))
    with tarfile.open(tar_path, "r:") as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == sorted(IMAGES)
        for m in members:
            assert m.isreg() and m.mode == 0o644 and m.uname == "" and m.gname == "" and m.uid == 0
            assert m.mtime == int((sender / m.name).stat().st_mtime)
            assert tar.extractfile(m).read() == IMAGES[m.name]


def test_missing_file_listed_with_warning(dirs, caplog):
    sender, _, staged = dirs
    write_images(sender)
    with caplog.at_level(logging.WARNING, logger="arb_pipeline.extract.media"):
        bundle = bundle_media(sender, ["99_00-00-00_2026-11-26.jpg", "12_04-15-26_2026-11-26.JPG"], staged)
    assert [f.name for f in bundle.files] == ["12_04-15-26_2026-11-26.JPG"]
    assert [(m.name, m.reason) for m in bundle.missing] == [("99_00-00-00_2026-11-26.jpg", NOT_FOUND)]
    assert any(
        "99_00-00-00_2026-11-26.jpg" in r.getMessage() and r.levelno == logging.WARNING
        for r in caplog.records
    )


def test_unsafe_names_not_bundled(dirs, tmp_path):
    sender, _, staged = dirs
    write_images(sender)
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"top secret")
    (sender / "link_out.jpg").symlink_to(secret)
    (sender / "link_in.jpg").symlink_to(sender / "12_04-15-26_2026-11-26.JPG")
    (sender / "sub").mkdir()
    (sender / "dir_link").symlink_to(tmp_path)  # dir_link/secret.txt passes the name rule
    os.mkfifo(sender / "fifo.jpg")
    (sender / "a_folder.jpg").mkdir()
    names = [
        "../etc/passwd",
        "/etc/passwd",
        "link_out.jpg",
        "dir_link/secret.txt",
        "sub/../x.jpg",
        "fifo.jpg",
        "a_folder.jpg",
        "with space.jpg",
        "link_in.jpg",
    ]
    bundle = bundle_media(sender, names, staged)
    assert [f.name for f in bundle.files] == ["link_in.jpg"]  # a symlink inside the folder is fine
    assert bundle.files[0].sha256 == sha(IMAGES["12_04-15-26_2026-11-26.JPG"])
    reasons = {m.name: m.reason for m in bundle.missing}
    assert set(reasons) == set(names) - {"link_in.jpg"}
    for name in ("../etc/passwd", "/etc/passwd", "sub/../x.jpg", "with space.jpg"):
        assert reasons[name] == UNSAFE_NAME
    for name in ("link_out.jpg", "dir_link/secret.txt"):
        assert reasons[name].startswith("unsafe name")
    assert reasons["fifo.jpg"] == reasons["a_folder.jpg"] == "not a regular file"
    with tarfile.open(staged.path("media.tar")) as tar:
        assert tar.getnames() == ["link_in.jpg"]
        assert b"top secret" not in staged.path("media.tar").read_bytes()


def test_no_files_no_tar(dirs):
    sender, _, staged = dirs
    bundle = bundle_media(sender, ["nope.jpg"], staged)
    assert bundle.entry is None and bundle.files == [] and len(bundle.missing) == 1
    assert not staged.path("media.tar").exists() and staged.entries == []
    assert bundle_media(sender, [], staged).entry is None


def test_missing_media_folder_is_a_clear_error(tmp_path):
    with pytest.raises(MediaError, match="media_dir setting"):
        bundle_media(tmp_path / "nope", ["a.jpg"], StagedBackup(tmp_path / "s"))
    with pytest.raises(MediaError, match="media_dir setting"):
        install_media(tmp_path / "x.tar", [], tmp_path / "nope")


def test_is_safe_name():
    assert is_safe_name("1_a.JPG") and is_safe_name("sub/1_a.jpg")
    for bad in ("../x", "/x", "a/b/c", ".", "./x", "a/..", "x y", "", "a\\b", "a/"):
        assert not is_safe_name(bad), bad


# ------------------------------------------------------------------------ receiver


def round_trip(sender, receiver, staged, names=None):
    bundle = bundle_media(sender, names or list(IMAGES), staged)
    return bundle, install_media(staged.path(bundle.entry.name), bundle.files, receiver)


def test_round_trip_identical_bytes(dirs):
    sender, receiver, staged = dirs
    write_images(sender)
    bundle, result = round_trip(sender, receiver, staged)
    assert sorted(result.installed) == sorted(IMAGES) and result.identical == [] and result.conflicts == []
    assert tree(receiver) == IMAGES  # and no .part files left
    for name in IMAGES:
        assert (receiver / name).stat().st_mtime == int((sender / name).stat().st_mtime)
        assert (receiver / name).stat().st_mode & 0o777 == 0o644 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_install_twice_is_identical(dirs):
    sender, receiver, staged = dirs
    write_images(sender)
    bundle, _ = round_trip(sender, receiver, staged)
    again = install_media(staged.path("media.tar"), bundle.files, receiver)
    assert again.installed == [] and sorted(again.identical) == sorted(IMAGES) and again.conflicts == []
    assert tree(receiver) == IMAGES


def test_different_existing_file_is_kept_and_reported(dirs):
    sender, receiver, staged = dirs
    write_images(sender)
    name = "13_04-16-00_2026-11-26.jpeg"
    (receiver / name).write_bytes(b"the receiver's own version")
    _, result = round_trip(sender, receiver, staged)
    assert (receiver / name).read_bytes() == b"the receiver's own version"
    [conflict] = result.conflicts
    assert conflict.name == name and conflict.existing_sha256 == sha(b"the receiver's own version")
    assert conflict.new_sha256 == sha(IMAGES[name])
    assert (receiver / conflict.kept_as).read_bytes() == IMAGES[name]
    assert conflict.kept_as.startswith(name + ".conflict-")
    assert sorted(result.installed) == sorted(set(IMAGES) - {name})


def test_existing_symlink_is_not_followed(dirs, tmp_path):
    sender, receiver, staged = dirs
    write_images(sender)
    outside = tmp_path / "outside.jpg"
    outside.write_bytes(b"outside")
    (receiver / "12_04-15-26_2026-11-26.JPG").symlink_to(outside)
    _, result = round_trip(sender, receiver, staged)
    assert outside.read_bytes() == b"outside"
    assert [c.name for c in result.conflicts] == ["12_04-15-26_2026-11-26.JPG"]


def test_tampered_tar_installs_nothing(dirs):
    sender, receiver, staged = dirs
    write_images(sender)
    bundle = bundle_media(sender, list(IMAGES), staged)
    tar_path = staged.path("media.tar")
    data = bytearray(tar_path.read_bytes())
    last = sorted(IMAGES)[-1]  # the last member: the others stage fine first
    at = data.find(IMAGES[last][:20])
    data[at + 5] ^= 0xFF
    tar_path.write_bytes(bytes(data))
    with pytest.raises(MediaError, match=f"{last}.*does not match the manifest"):
        install_media(tar_path, bundle.files, receiver)
    assert list(receiver.iterdir()) == []


def test_wrong_size_and_missing_member(dirs):
    sender, receiver, staged = dirs
    write_images(sender)
    bundle = bundle_media(sender, list(IMAGES), staged)
    tar_path = staged.path("media.tar")
    wrong = [MediaEntry(f.name, f.bytes + 1, f.sha256) if i == 0 else f for i, f in enumerate(bundle.files)]
    with pytest.raises(MediaError, match="bytes, the manifest says"):
        install_media(tar_path, wrong, receiver)
    extra = bundle.files + [MediaEntry("77_x.jpg", 3, sha(b"abc"))]
    with pytest.raises(MediaError, match="lacks 1 file.*77_x.jpg"):
        install_media(tar_path, extra, receiver)
    assert list(receiver.iterdir()) == []


def craft(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> None:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)


def reg(name: str) -> tarfile.TarInfo:
    return tarfile.TarInfo(name)


def link(name: str, target: str, kind=tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


def folder(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    return info


GOOD = b"good image"


@pytest.mark.parametrize(
    "bad, bad_data, expect",
    [
        (reg("../evil"), b"evil", "unsafe name"),
        (reg("sub/../../evil"), b"evil", "unsafe name"),
        (reg("/tmp/evil_abs"), b"evil", "unsafe name"),
        (link("evil_link.jpg", "/etc/passwd"), None, "a symlink"),
        (link("evil_hard.jpg", "/etc/passwd", tarfile.LNKTYPE), None, "a hard link"),
        (folder("sub"), None, "a folder"),
        (reg("not_listed.jpg"), b"evil", "not listed in the manifest"),
    ],
)
def test_hostile_members_refused(tmp_path, bad, bad_data, expect):
    receiver = tmp_path / "deep" / "receiver"
    receiver.mkdir(parents=True)
    bundle = tmp_path / "bundle.tar"
    craft(bundle, [(reg("1_good.jpg"), GOOD), (bad, bad_data)])
    expected = [MediaEntry("1_good.jpg", len(GOOD), sha(GOOD))]  # the name check comes before "not listed"
    before = tree(tmp_path)
    with pytest.raises(MediaError, match=expect):
        install_media(bundle, expected, receiver)
    assert list(receiver.iterdir()) == []  # the good member wasn't installed either
    assert tree(tmp_path) == before
    assert not Path("/tmp/evil_abs").exists()


def test_unsafe_expected_name_refused(tmp_path):
    receiver = tmp_path / "r"
    receiver.mkdir()
    craft(tmp_path / "b.tar", [(reg("../evil"), GOOD)])
    with pytest.raises(MediaError, match="not a safe relative name"):
        install_media(tmp_path / "b.tar", [MediaEntry("../evil", len(GOOD), sha(GOOD))], receiver)
    assert sorted(tmp_path.iterdir()) == sorted([tmp_path / "b.tar", receiver])


def test_duplicate_member_refused(tmp_path):
    receiver = tmp_path / "r"
    receiver.mkdir()
    craft(tmp_path / "b.tar", [(reg("1.jpg"), GOOD), (reg("1.jpg"), GOOD)])
    with pytest.raises(MediaError, match="twice"):
        install_media(tmp_path / "b.tar", [MediaEntry("1.jpg", len(GOOD), sha(GOOD))], receiver)
    assert list(receiver.iterdir()) == []


def test_not_a_tar_and_compressed_tar(tmp_path):
    receiver = tmp_path / "r"
    receiver.mkdir()
    (tmp_path / "junk.tar").write_bytes(b"not a tar at all" * 100)
    with pytest.raises(MediaError, match="not a readable uncompressed tar"):
        install_media(tmp_path / "junk.tar", [], receiver)
    with tarfile.open(tmp_path / "z.tar.gz", "w:gz") as tar:
        info = reg("1.jpg")
        info.size = len(GOOD)
        tar.addfile(info, io.BytesIO(GOOD))
    with pytest.raises(MediaError, match="not a readable uncompressed tar"):
        install_media(tmp_path / "z.tar.gz", [MediaEntry("1.jpg", len(GOOD), sha(GOOD))], receiver)


def test_subfolder_symlink_on_receiver_not_followed(tmp_path):
    receiver, outside = tmp_path / "r", tmp_path / "outside"
    receiver.mkdir()
    outside.mkdir()
    (receiver / "sub").symlink_to(outside)
    craft(tmp_path / "b.tar", [(reg("sub/1.jpg"), GOOD)])
    with pytest.raises(MediaError, match="not a plain folder"):
        install_media(tmp_path / "b.tar", [MediaEntry("sub/1.jpg", len(GOOD), sha(GOOD))], receiver)
    assert list(outside.iterdir()) == []


# ------------------------------------------------------------------------ scale


def test_large_file_streams(dirs):
    sender, receiver, staged = dirs
    name = "1_00-00-00_2026-01-01.jpg"
    digest = hashlib.sha256()
    with open(sender / name, "wb") as fh:
        for _ in range(20):
            block = os.urandom(1 << 20)
            digest.update(block)
            fh.write(block)
    tracemalloc.start()
    try:
        bundle = bundle_media(sender, [name], staged)
        _, bundle_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        result = install_media(staged.path("media.tar"), bundle.files, receiver)
        _, install_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert bundle.files == [MediaEntry(name, 20 << 20, digest.hexdigest())]
    assert result.installed == [name]
    assert bundle_peak < 6 << 20 and install_peak < 6 << 20, (bundle_peak, install_peak)
    check = hashlib.sha256()
    with open(receiver / name, "rb") as fh:
        while chunk := fh.read(1 << 20):
            check.update(chunk)
    assert check.hexdigest() == digest.hexdigest()


def test_bundle_all_media_nested_2000_files(dirs, caplog):
    sender, receiver, staged = dirs
    expected = {}
    for i in range(2000):
        name = f"{i}_00-00-{i % 60:02d}_2026-01-01.{('jpg', 'JPEG', 'Png')[i % 3]}"
        if i % 2:
            name = f"d{i % 7}/{name}"
        expected[name] = f"image {i}".encode()
    write_images(sender, expected)
    (sender / "d1" / "deeper").mkdir()
    (sender / "d1" / "deeper" / "x.jpg").write_bytes(b"too deep")
    (sender / "bad name.jpg").write_bytes(b"x")
    (sender / "link.jpg").symlink_to(
        sender / "d1" / next(n for n in expected if n.startswith("d1/")).split("/")[1]
    )
    with caplog.at_level(logging.WARNING, logger="arb_pipeline.extract.media"):
        bundle = bundle_all_media(sender, staged)
    assert [f.name for f in bundle.files] == sorted(expected)
    assert bundle.entry.rows == 2000
    assert {m.name for m in bundle.missing} == {"d1/deeper/", "bad name.jpg", "link.jpg"}
    result = install_media(staged.path("media.tar"), bundle.files, receiver)
    assert len(result.installed) == 2000
    assert tree(receiver) == expected
