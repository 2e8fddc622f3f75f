"""Real OCI images for the lab, built without Docker Hub (see ``catalog`` for the list).

    build_all(out_dir, cache_dir=None, only=None) -> {name: BuiltImage}
    push_all(layout_dir, built, "127.0.0.1:5000")

Everything comes from Debian's apt repositories (``apt-get download``), PyPI
(``pip download``) and this repository. Builds are deterministic (same inputs, same
digests) and cached (see ``build``).
"""

from .build import BuiltImage, BuiltLayer, ImageBuilder, build_all
from .errors import ImageBuildError
from .push import push_all

__all__ = ["BuiltImage", "BuiltLayer", "ImageBuildError", "ImageBuilder", "build_all", "push_all"]
