"""Applications built on the engine (the top layer, beside the scripts): ``apps.viewer``,
the deep-zoom comparison viewer of ``viewer.py``. Each app keeps its optional
dependencies to itself (``requirements-viewer.txt``)."""
