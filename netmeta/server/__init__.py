"""The control plane: a Neutron v2.0-compatible API, instances and a change feed.

``app`` builds and runs the aiohttp application; ``neutron_api`` and
``netmeta_api`` hold the routes; ``networks``, ``ports``, ``routers`` and
``instances`` hold the rules, each operation one store transaction;
``addresses`` applies :mod:`netmeta.model.ipam`; ``filters`` and
``validation`` are the pure request parsing; ``errors`` the Neutron error
shapes.
"""
