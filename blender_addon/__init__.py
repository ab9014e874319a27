"""HeadRig for Blender: builds and imports animation-ready heads.

The scene side of HeadRig: it imports neither torch nor the backend, and computes nothing. It talks
to ``headrig serve`` with the client from the project's ``shared`` package, which ``build_addon.py``
vendors into the extension as ``headrig_shared``.

Modules: ``preferences`` (server, keys, local backend), ``worker`` (threads, no bpy), ``jobs``
(registry + the ``bpy.app.timers`` drain), ``importer`` (bundle -> organised scene), ``animation``
(an ``animation.json`` clip -> Actions on a head), ``operators`` (+ ``operators_animation``:
retarget, Live Link; ``operators_backend``: the local backend), ``panel`` (View3D sidebar > HeadRig). ``register``/``unregister`` can run any number of times;
``unregister`` stops every thread and the local backend this Blender started.
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

    from . import jobs, props

    for cls in _classes():
        bpy.utils.register_class(cls)
    props.attach()
    jobs.install()


def unregister() -> None:
    import bpy

    from . import jobs, props

    jobs.uninstall()  # timer off, threads stopped, the local backend this Blender started stopped
    props.detach()
    for cls in reversed(_classes()):
        if getattr(cls, "is_registered", False):
            bpy.utils.unregister_class(cls)
