"""API errors, in Neutron's wire shape.

Every refusal the server gives is a :class:`NeutronError` rendered as::

    {"NeutronError": {"type": "<Type>", "message": "<text>", "detail": ""}}

so the ``openstack`` CLI and openstacksdk print the message as they would
for Neutron. The hierarchy is deliberately flat — one class per HTTP status,
the ``type`` string carries the Neutron name::

    NeutronError (500)
    ├── BadRequest (400)   InvalidInput, HTTPBadRequest, InvalidAllocationPool, …
    ├── Forbidden (403)    PolicyNotAuthorized (visible, but not yours to change)
    ├── NotFound (404)     NetworkNotFound, SubnetNotFound, PortNotFound, …
    ├── Conflict (409)     IpAddressInUse, IpAddressGenerationFailure, NetworkInUse, …
    ├── Gone (410)         ResourceVersionTooOld (the change feed only)
    └── MethodNotAllowed (405)

Choices where the brief and Neutron differ, made in Neutron's favour:

* A subnet overlapping another on the same network is **400 InvalidInput**
  ("Requested subnet with cidr … overlaps with another subnet"), as in
  Neutron's ``_validate_subnet_cidr``.
* Adding a router interface on a subnet the router already has an interface
  on, or on one overlapping it, is **400 BadRequest**, as in Neutron's
  ``_check_for_dup_router_subnets``. When *another* router holds the gateway
  address, the port cannot be created: **409 IpAddressInUse**.
"""

from __future__ import annotations

from typing import Any


class NeutronError(Exception):
    status = 500
    default_type = "InternalServerError"

    def __init__(self, message: str, type_: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.type = type_ or self.default_type

    def body(self) -> dict[str, Any]:
        return {"NeutronError": {"type": self.type, "message": self.message, "detail": ""}}


class BadRequest(NeutronError):
    status = 400
    default_type = "BadRequest"


class Forbidden(NeutronError):
    status = 403
    default_type = "PolicyNotAuthorized"


class NotFound(NeutronError):
    status = 404
    default_type = "HTTPNotFound"


class Conflict(NeutronError):
    status = 409
    default_type = "Conflict"


class Gone(NeutronError):
    status = 410
    default_type = "ResourceVersionTooOld"


class MethodNotAllowed(NeutronError):
    status = 405
    default_type = "HTTPMethodNotAllowed"


def invalid(message: str) -> BadRequest:
    return BadRequest(f"Invalid input for operation: {message}.", "InvalidInput")


NOT_FOUND_TYPES = {
    "networks": ("NetworkNotFound", "Network"),
    "subnets": ("SubnetNotFound", "Subnet"),
    "ports": ("PortNotFound", "Port"),
    "routers": ("RouterNotFound", "Router"),
    "instances": ("InstanceNotFound", "Instance"),
    "security_groups": ("SecurityGroupNotFound", "Security group"),
    "security_group_rules": ("SecurityGroupRuleNotFound", "Security group rule"),
}


def not_found(kind: str, obj_id: str) -> NotFound:
    type_, label = NOT_FOUND_TYPES[kind]
    if kind.startswith("security_group"):  # Neutron's words for these two
        return NotFound(f"{label} {obj_id} does not exist", type_)
    return NotFound(f"{label} {obj_id} could not be found.", type_)
