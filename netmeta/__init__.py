"""netmeta: the cloud metadata service for Linux tenant networks.

Layers (checked by import-linter, see ``.importlinter``)::

    cli ─▶ server ─▶ store
      │      └──────▶ model (pure)
      ├─▶ agent ───▶ model (pure)
      │      └──────▶ drivers (the only I/O on the kernel and processes)
      └─▶ metadata ▶ model (pure)
"""

__version__ = "0.1.0"
