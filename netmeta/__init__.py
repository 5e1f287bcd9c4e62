"""netmeta: the cloud metadata service for Linux tenant networks.

Layers (checked by import-linter, see ``.importlinter``)::

    cli ─▶ server ─▶ store
      │      └──────▶ model (pure)
      ├─▶ agent ───▶ model (pure)
      │      └──────▶ drivers (the only I/O on the kernel and processes)
      └─▶ metadata ▶ model (pure)

The components, the data flow (API → feed → desired state → plan → apply),
where each decision lives and why: docs/architecture.md.
"""

__version__ = "0.1.0"
