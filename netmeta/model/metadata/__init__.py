"""Pure metadata logic: who is asking, and what the answer is.

Nothing here does I/O. :mod:`identity` maps (listener context, source IP) to
an instance; :mod:`tree` holds the shared path and listing rules and the
:class:`~netmeta.model.metadata.tree.InstanceData` view every tree is built
from; :mod:`openstack` and :mod:`ec2` build Nova's two trees; :mod:`tokens`,
:mod:`ratelimit` and :mod:`signing` are the small security pieces. The only
module that turns these into HTTP is :mod:`netmeta.metadata.app`.
"""
