"""tnt's Label Studio ML backend: pre-annotations from a workspace, human corrections back into it.

Start it with ``tnt serve``; ``create_app(BackendSettings(...))`` gives the ASGI app.
"""

from label_studio_backend.app import BackendSettings, create_app

__all__ = ["BackendSettings", "create_app"]
