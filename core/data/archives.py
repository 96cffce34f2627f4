"""Zips from outside (uploaded datasets, imported runs) are checked before anything is read from
them: one guard against zip bombs and links, with the limits each kind of zip needs.

    check_zip(archive, DATASET_ZIP)   # raises UnsafeArchive naming the member and the limit
    check_tar(path, CIFAR_TAR)        # the same for a (gzipped) tar, e.g. CIFAR's python tarballs
"""
from __future__ import annotations

import os
import tarfile
import zipfile
from dataclasses import dataclass


class UnsafeArchive(ValueError):
    """A zip member (or the whole zip) is over a limit, a link, or compressed like a zip bomb."""


@dataclass(frozen=True)
class ZipLimits:
    member_bytes: int      # the largest file it may unpack to
    total_bytes: int       # all files together
    members: int           # how many files
    ratio: int = 200       # uncompressed / compressed above this (for members over 1 MiB) looks like a bomb


MiB, GiB = 2**20, 2**30
# A run export: models and predictions, at most a few hundred MB each.
RUN_EXPORT = ZipLimits(member_bytes=512 * MiB, total_bytes=2 * GiB, members=100_000)
# A dataset of images: each one is read whole into memory to be decoded, so one image's limit
# matters most; the largest public chest X-ray sets have about 200,000 images.
DATASET_ZIP = ZipLimits(member_bytes=256 * MiB, total_bytes=200 * GiB, members=1_000_000)
# A MedMNIST-style .npz: a few arrays, each loaded whole (224 px ChestMNIST's images are 3.9 GB).
NPZ_FILE = ZipLimits(member_bytes=8 * GiB, total_bytes=16 * GiB, members=64)
# CIFAR's python tarballs: a few pickled batches (CIFAR-100's train is 155 MB), read into memory.
CIFAR_TAR = ZipLimits(member_bytes=1 * GiB, total_bytes=4 * GiB, members=64)


def check_zip(archive: zipfile.ZipFile, limits: ZipLimits) -> list[zipfile.ZipInfo]:
    """The archive's members once every one is within `limits`; UnsafeArchive otherwise. The sizes
    checked are those the zip declares: zipfile never unpacks a member past its declared size."""
    members = archive.infolist()
    if len(members) > limits.members:
        raise UnsafeArchive(f"the zip holds {len(members):,} files, more than the limit of {limits.members:,}")
    total = 0
    for info in members:
        if (info.external_attr >> 16) & 0o170000 == 0o120000:
            raise UnsafeArchive(f"{info.filename}: symbolic links are not allowed")
        if info.file_size > limits.member_bytes:
            raise UnsafeArchive(f"{info.filename}: {info.file_size:,} bytes is larger than the limit "
                                f"({limits.member_bytes // MiB:,} MiB)")
        if info.file_size > MiB and info.file_size > limits.ratio * info.compress_size:
            raise UnsafeArchive(f"{info.filename}: compressed {info.file_size // max(1, info.compress_size):,}:1, "
                                "refused as a possible zip bomb")
        total += info.file_size
        if total > limits.total_bytes:
            raise UnsafeArchive(f"the zip unpacks to more than {limits.total_bytes // GiB:,} GiB")
    return members


def check_tar(path: str | os.PathLike, limits: ZipLimits) -> list[tarfile.TarInfo]:
    """The members of the tar (gzipped or not) at `path` once every one is a plain file or folder
    within `limits`; UnsafeArchive otherwise. Headers are read in turn, so a member over a limit
    stops the listing before its data are decompressed; the whole is held to `limits.ratio` times
    the file's size (a gzip bomb)."""
    compressed = max(1, os.path.getsize(path))
    members, total = [], 0
    try:
        with tarfile.open(path, "r:*") as archive:
            for info in archive:
                members.append(info)
                if len(members) > limits.members:
                    raise UnsafeArchive(f"the archive holds more than {limits.members:,} files")
                if not (info.isfile() or info.isdir()):
                    raise UnsafeArchive(f"{info.name}: links and special files are not allowed")
                if info.size > limits.member_bytes:
                    raise UnsafeArchive(f"{info.name}: {info.size:,} bytes is larger than the limit "
                                        f"({limits.member_bytes // MiB:,} MiB)")
                total += info.size
                if total > limits.total_bytes:
                    raise UnsafeArchive(f"the archive unpacks to more than {limits.total_bytes // GiB:,} GiB")
                if total > MiB and total > limits.ratio * compressed:
                    raise UnsafeArchive(f"unpacks to over {limits.ratio}:1 of its size, refused as a possible "
                                        "decompression bomb")
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise UnsafeArchive(f"not a readable tar archive ({exc})") from None
    return members
