"""HeadRig for Blender: builds and imports animation-ready heads.

The scene side of HeadRig: it imports neither torch nor the backend, and computes nothing. It talks
to ``headrig serve`` with the client from the project's ``shared`` package, which ``build_addon.py``
vendors into the extension as ``headrig_shared``.

Modules: ``preferences`` (server, keys, local backend), ``worker`` (threads, no bpy), ``jobs``
(the job registry), ``drain`` (the ``bpy.app.timers`` callback), ``heads`` (property names, finding a
head), ``importer`` (bundle -> organised scene), ``animation`` (an ``animation.json`` clip -> Actions
on a head), ``gaussians`` + ``gaussian_nodes`` (the avatar on the mesh), ``turntable``, ``operators``
(+ ``operators_animation``: retarget, Live Link; ``operators_backend``: the local backend), ``panel``
(View3D sidebar > HeadRig).
``register``/``unregister`` can run any number of times; ``unregister`` stops every thread and the
local backend this Blender started.

Imports run one way (``tests/test_addon_imports.py`` checks the graph, function-local imports
included, has no cycle). At the bottom ``heads`` (what marks a HeadRig head, finding it from any of
its parts), ``worker``, ``props`` and ``gaussian_nodes`` import nothing of the add-on; ``jobs`` (the
registry and the settings look-ups operators share) leans on ``preferences`` only; ``animation``,
``gaussians``, ``turntable`` and ``importer`` build the scene; ``drain`` (the timer that brings
results in) and the operators sit on top, ``panel`` above them, and only this file imports them all.
"""

from __future__ import annotations

def bundle_format():
    """The vendored bundle module (``shared.bundle`` in the repository)."""
    from .headrig_shared import bundle

    return bundle


def _classes():
    from . import gaussians, operators, operators_animation, operators_backend, panel, preferences, props, turntable

    return (*props.CLASSES, preferences.HEADRIG_AddonPreferences, *operators.CLASSES, *operators_backend.CLASSES,
            *operators_animation.CLASSES, *gaussians.CLASSES, *turntable.CLASSES, *panel.CLASSES)


def register() -> None:
    import bpy

    from . import drain, props

    for cls in _classes():
        bpy.utils.register_class(cls)
    props.attach()
    drain.install()


def unregister() -> None:
    import bpy

    from . import drain, props

    drain.uninstall()  # timer off, threads stopped, the local backend this Blender started stopped
    props.detach()
    for cls in reversed(_classes()):
        if getattr(cls, "is_registered", False):
            bpy.utils.unregister_class(cls)
