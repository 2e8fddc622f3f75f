"""Every error the image builder raises, in one tree.

    ImageBuildError
    ├── CatalogError      stack.yml or a function folder is unusable; an unknown image name
    ├── ResolveError      apt could not resolve a package set
    ├── DownloadError     apt-get download or pip download failed
    ├── LayerError        a layer cannot be built as asked (filler larger than room, bad entry)
    └── PushError         skopeo copy failed

Failures of the programs we drive (apt-get, pip, skopeo, the image's own python) are
mapped into this tree where they are run, with the program's stderr in the message.
"""

from __future__ import annotations


class ImageBuildError(Exception):
    """Base of every error raised by faas_accel.images."""


class CatalogError(ImageBuildError):
    """The image catalog (stack.yml, functions/) is invalid, or a name is unknown."""


class ResolveError(ImageBuildError):
    """apt could not resolve a package set."""


class DownloadError(ImageBuildError):
    """A package or wheel could not be downloaded."""


class LayerError(ImageBuildError):
    """A layer cannot be built as asked."""


class PushError(ImageBuildError):
    """Copying an image to a registry failed."""
