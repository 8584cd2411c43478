"""The errors the data layer raises: each names the file and what is wrong with it."""

from __future__ import annotations


class DatasetError(ValueError):
    """A dataset folder or file is not usable (missing folder, mask, unreadable image, ...)."""


class DownloadError(RuntimeError):
    """A dataset archive could not be fetched (no network, server error, ...)."""


class ChecksumError(ValueError):
    """A downloaded file does not match its published checksum."""


class UnsafeArchiveError(ValueError):
    """An archive is refused before extraction: a member would land outside the extraction folder
    (by name or through links), is a device, or goes over the size caps."""
