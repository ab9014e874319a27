"""HeadRig for Blender: builds and imports animation-ready heads.

The scene side of HeadRig: it imports neither torch nor the backend. The bundle format comes from
the project's ``shared`` package, which ``build_addon.py`` vendors into the extension as
``headrig_shared``. The panel, jobs and import land with the add-on issue; this module already
registers cleanly so the package layout and build can be tested.
"""

from __future__ import annotations


def bundle_format():
    """The vendored bundle module (``shared.bundle`` in the repository)."""
    from .headrig_shared import bundle

    return bundle


def register() -> None:
    pass


def unregister() -> None:
    pass
