"""The deep-zoom comparison viewer (``viewer.py``; docs/viewer.md): ``server.py`` (the
Starlette app over ``engine.tiles.TileService``) and ``static/`` (the page and its
pan/zoom/tile client, plain JavaScript without a build step). Importing this package
needs nothing beyond the core; ``apps.viewer.server`` needs ``requirements-viewer.txt``."""
