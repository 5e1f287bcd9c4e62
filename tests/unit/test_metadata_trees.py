"""The two metadata trees against Nova's documented output, version by version."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from netmeta.model.metadata import ec2, openstack
from netmeta.model.metadata.tree import InstanceData, Leaf, PathNotFound, instance_data, split_path
from tests.builders import PUBKEY, USER_DATA, VM1, VM2, metadata_cloud

SEED = b"\x01" * 512


def vm(instance_id: str = VM1, address: str = "127.0.0.1", **kw: Any) -> InstanceData:
    snap = metadata_cloud()
    return instance_data(snap, snap.instances[instance_id], address, **kw)  # type: ignore[index]


# --- paths -----------------------------------------------------------------


@pytest.mark.parametrize(
    "path, tokens",
    [
        ("/", []),
        ("", []),
        ("//", []),
        ("/latest/", ["latest"]),
        ("/latest//meta-data/./hostname/", ["latest", "meta-data", "hostname"]),
        ("/openstack/latest/../2012-08-10", ["openstack", "2012-08-10"]),
        ("/../../etc/passwd", ["etc", "passwd"]),
    ],
)
def test_paths_normalise_like_nova(path: str, tokens: list[str]) -> None:
    assert split_path(path) == tuple(tokens)


# --- OpenStack ------------------------------------------------------------------

OS_FILES = {
    "2012-08-10": ["meta_data.json", "user_data"],
    "2013-04-04": ["meta_data.json", "user_data", "password"],
    "2013-10-17": ["meta_data.json", "user_data", "password", "vendor_data.json"],
    "2015-10-15": ["meta_data.json", "user_data", "password", "vendor_data.json", "network_data.json"],
    "2016-06-30": ["meta_data.json", "user_data", "password", "vendor_data.json", "network_data.json"],
    "2016-10-06": ["meta_data.json", "user_data", "password", "vendor_data.json", "network_data.json", "vendor_data2.json"],
    "latest": ["meta_data.json", "user_data", "password", "vendor_data.json", "network_data.json", "vendor_data2.json"],
}

BASE_MD = ["uuid", "meta", "public_keys", "keys", "hostname", "name", "launch_index", "availability_zone"]
OS_MD_KEYS = {
    "2012-08-10": BASE_MD,
    "2013-04-04": BASE_MD + ["random_seed"],
    "2015-10-15": BASE_MD + ["random_seed", "project_id"],
    "2016-06-30": BASE_MD + ["random_seed", "project_id", "devices"],
    "2018-08-27": BASE_MD + ["random_seed", "project_id", "devices"],
    "2020-10-14": BASE_MD + ["random_seed", "project_id", "devices", "dedicated_cpus"],
    "latest": BASE_MD + ["random_seed", "project_id", "devices", "dedicated_cpus"],
}


def test_openstack_version_list() -> None:
    assert openstack.lookup(vm(), [], SEED).body.decode().split("\n") == [  # type: ignore[union-attr]
        "2012-08-10", "2013-04-04", "2013-10-17", "2015-10-15", "2016-06-30",
        "2016-10-06", "2017-02-22", "2018-08-27", "2020-10-14", "2025-04-04", "latest",
    ]


@pytest.mark.parametrize("version, files", OS_FILES.items())
def test_openstack_listing_is_gated_by_version(version: str, files: list[str]) -> None:
    leaf = openstack.lookup(vm(), [version], SEED)
    assert isinstance(leaf, Leaf) and leaf.body.decode().split("\n") == files
    without_user_data = openstack.lookup(vm(VM2), [version], SEED)
    assert isinstance(without_user_data, Leaf)
    assert "user_data" not in without_user_data.body.decode().split("\n")


@pytest.mark.parametrize("version, keys", OS_MD_KEYS.items())
def test_meta_data_json_keys_by_version(version: str, keys: list[str]) -> None:
    leaf = openstack.lookup(vm(), [version, "meta_data.json"], SEED)
    assert isinstance(leaf, Leaf) and leaf.content_type == "application/json"
    md = json.loads(leaf.body)
    assert list(md) == keys
    assert md["uuid"] == VM1 and md["hostname"] == "vm1.novalocal" and md["name"] == "vm1"
    assert md["public_keys"] == {"mykey": PUBKEY}
    assert md["keys"] == [{"name": "mykey", "type": "ssh", "data": PUBKEY}]
    assert md["meta"] == {"role": "web"} and md["launch_index"] == 0 and md["availability_zone"] == "nova"
    if "random_seed" in md:
        assert base64.b64decode(md["random_seed"]) == SEED
    if "project_id" in md:
        assert md["project_id"] == "proj-1"


@pytest.mark.parametrize("version", [*OS_MD_KEYS, "latest"])
@pytest.mark.parametrize("which", [VM1, VM2])
def test_meta_data_template_is_byte_identical_to_the_plain_document(version: str, which: str) -> None:
    # The listener serves the pre-encoded template; it must be byte-identical
    # to json.dumps of the plain document for the same seed, in every version.
    plain = json.dumps(openstack.meta_data(vm(which), openstack.OPENSTACK_VERSIONS.resolve(version), SEED)).encode()
    assert openstack.meta_data_template(vm(which), version).render(SEED) == plain
    leaf = openstack.lookup(vm(which), [version, "meta_data.json"], SEED)
    assert isinstance(leaf, Leaf) and leaf.body == plain
    other = openstack.meta_data_template(vm(which), version).render(bytes(512))
    assert json.loads(other).get("random_seed", "") in ("", base64.b64encode(bytes(512)).decode())


def test_meta_data_without_key_or_meta_omits_them() -> None:
    md = json.loads(openstack.lookup(vm(VM2), ["latest", "meta_data.json"], SEED).body)  # type: ignore[union-attr]
    assert "public_keys" not in md and "keys" not in md and "meta" not in md


@pytest.mark.parametrize(
    "tokens, why",
    [
        (["2099-01-01"], "unknown OpenStack metadata version"),
        (["2012-08-10", "password"], "not in version"),
        (["2013-04-04", "vendor_data2.json"], "not in version"),
        (["latest", "nope.json"], "no file"),
        (["latest", "meta_data.json", "x"], "no file"),
    ],
)
def test_openstack_not_found_says_what(tokens: list[str], why: str) -> None:
    with pytest.raises(PathNotFound) as err:
        openstack.lookup(vm(), tokens, SEED)
    assert why in err.value.message()


def test_user_data_is_served_decoded_and_only_when_present() -> None:
    assert openstack.lookup(vm(), ["latest", "user_data"], SEED) == Leaf(USER_DATA)
    with pytest.raises(PathNotFound, match="no user data"):
        openstack.lookup(vm(VM2), ["latest", "user_data"], SEED)


def test_vendor_data_files() -> None:
    data = vm(vendordata={"a": 1})
    assert openstack.lookup(data, ["latest", "vendor_data.json"], SEED) == Leaf(b'{"a": 1}', "application/json")
    assert openstack.lookup(data, ["latest", "vendor_data2.json"], SEED) == Leaf(b'{"static": {"a": 1}}', "application/json")


def test_password_is_a_handler() -> None:
    assert openstack.lookup(vm(), ["latest", "password"], SEED) == openstack.PASSWORD_HANDLER


# network_data.json: the parts of Nova's published schema (doc/api_schemas/
# network_data.json) that netmeta's output can exercise, restated here.
_MAC = "^([0-9a-f]{2}:){5}[0-9a-f]{2}$"
NETWORK_DATA_SCHEMA = {
    "type": "object",
    "required": ["links", "networks", "services"],
    "properties": {
        "links": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["ethernet_mac_address", "id", "type"],
                "properties": {
                    "id": {"type": "string"},
                    "vif_id": {"type": "string"},
                    "ethernet_mac_address": {"type": "string", "pattern": _MAC},
                    "mtu": {"anyOf": [{"type": "number", "minimum": 1, "maximum": 65535}, {"type": "null"}]},
                    "type": {"enum": ["bridge", "dvs", "hw_veb", "hyperv", "ovs", "tap", "vhostuser", "vif", "phy"]},
                },
            },
        },
        "networks": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["id", "type", "link", "network_id"],
                "properties": {
                    "type": {"enum": ["ipv4", "ipv4_dhcp", "ipv6", "ipv6_dhcp", "ipv6_slaac"]},
                    "routes": {
                        "type": "array",
                        "items": {"type": "object", "required": ["network", "netmask", "gateway"]},
                    },
                },
            },
        },
        "services": {
            "type": "array",
            "items": {"type": "object", "required": ["type", "address"], "properties": {"type": {"enum": ["dns"]}}},
        },
    },
}


def test_network_data_shape_and_schema() -> None:
    import jsonschema
    leaf = openstack.lookup(vm(), ["latest", "network_data.json"], SEED)
    assert isinstance(leaf, Leaf) and leaf.content_type == "text/plain; charset=UTF-8"
    nd = json.loads(leaf.body)
    jsonschema.validate(nd, NETWORK_DATA_SCHEMA)
    links = {link["id"]: link for link in nd["links"]}
    assert set(links) == {"tapp1aaaaaaaaa", "tapp1bbbbbbbbb", "tapp1ccccccccc"}
    assert links["tapp1aaaaaaaaa"]["mtu"] == 1450 and links["tapp1aaaaaaaaa"]["ethernet_mac_address"] == "fa:16:3e:00:00:01"
    nets = {(n["link"], n["type"]): n for n in nd["networks"]}
    assert ("tapp1aaaaaaaaa", "ipv4_dhcp") in nets
    static = nets[("tapp1bbbbbbbbb", "ipv4")]
    assert static["ip_address"] == "192.168.50.10" and static["netmask"] == "255.255.255.0"
    assert static["routes"] == [
        {"network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": "192.168.50.1"},
        {"network": "172.16.0.0", "netmask": "255.255.0.0", "gateway": "192.168.50.254"},
    ]
    assert static["services"] == [{"type": "dns", "address": "10.0.0.2"}, {"type": "dns", "address": "10.0.0.3"}]
    v6 = nets[("tapp1bbbbbbbbb", "ipv6")]
    assert v6["ip_address"] == "fd00:1::10" and v6["routes"][0]["gateway"] == "fd00:1::1"
    assert [n["id"] for n in nd["networks"]] == [f"network{i}" for i in range(len(nd["networks"]))]
    assert nd["services"] == [{"type": "dns", "address": "10.0.0.2"}, {"type": "dns", "address": "10.0.0.3"}]


# --- EC2 ----------------------------------------------------------------------

EC2_BASE = ["ami-id", "ami-launch-index", "ami-manifest-path", "hostname", "instance-id", "local-ipv4",
            "public-keys/", "reservation-id", "security-groups"]
V2007_01 = ["local-hostname", "public-hostname", "public-ipv4"]
EC2_KEYS = {
    "1.0": EC2_BASE,
    "2007-01-19": EC2_BASE + V2007_01,
    "2007-03-01": EC2_BASE + V2007_01,
    "2007-08-29": EC2_BASE + V2007_01 + ["instance-type"],
    "2007-10-10": EC2_BASE + V2007_01 + ["instance-type"],
    "2007-12-15": EC2_BASE + V2007_01 + ["instance-type", "block-device-mapping/"],
    "2008-02-01": EC2_BASE + V2007_01 + ["instance-type", "block-device-mapping/", "placement/"],
    "2008-09-01": EC2_BASE + V2007_01 + ["instance-type", "block-device-mapping/", "placement/", "instance-action"],
    "2009-04-04": EC2_BASE + V2007_01 + ["instance-type", "block-device-mapping/", "placement/", "instance-action",
                                         "mac", "network/"],
    "latest": EC2_BASE + V2007_01 + ["instance-type", "block-device-mapping/", "placement/", "instance-action",
                                     "mac", "network/"],
}


def test_ec2_version_list() -> None:
    assert ec2.lookup(vm(), []).body == b"1.0\n2007-01-19\n2007-03-01\n2007-08-29\n2007-10-10\n2007-12-15\n2008-02-01\n2008-09-01\n2009-04-04\nlatest"


@pytest.mark.parametrize("version, keys", EC2_KEYS.items())
def test_ec2_meta_data_keys_by_version(version: str, keys: list[str]) -> None:
    listing = ec2.lookup(vm(), [version, "meta-data"]).body.decode().split("\n")
    assert listing == sorted(keys)
    for key in keys:  # every listed leaf or directory is servable (cloud-init needs that)
        ec2.lookup(vm(), [version, "meta-data", key.rstrip("/")])


@pytest.mark.parametrize(
    "path, value",
    [
        ("ami-id", b"ami-00000001"),
        ("ami-launch-index", b"0"),
        ("ami-manifest-path", b"FIXME"),
        ("instance-id", b"i-1b2c3d4e"),
        ("hostname", b"vm1.novalocal"),
        ("local-hostname", b"vm1.novalocal"),
        ("public-hostname", b"vm1.novalocal"),
        ("local-ipv4", b"127.0.0.1"),
        ("public-ipv4", b""),
        ("security-groups", b""),
        ("instance-type", b"m1.small"),
        ("instance-action", b"none"),
        ("public-keys", b"0=mykey"),
        ("public-keys/0", b"openssh-key"),
        ("public-keys/0/openssh-key", PUBKEY.encode()),
        ("block-device-mapping", b"ami\nroot"),
        ("block-device-mapping/ami", b"vda"),
        ("block-device-mapping/root", b"/dev/vda"),
        ("placement", b"availability-zone"),
        ("placement/availability-zone", b"nova"),
    ],
)
def test_ec2_values(path: str, value: bytes) -> None:
    assert ec2.lookup(vm(), ["latest", "meta-data", *path.split("/")]) == Leaf(value)


def test_ec2_version_root_and_identity_document() -> None:
    assert ec2.lookup(vm(), ["latest"]).body == b"dynamic/\nmeta-data/\nuser-data"
    assert ec2.lookup(vm(VM2), ["2008-09-01"]).body == b"meta-data/"
    assert ec2.lookup(vm(), ["latest", "user-data"]).body == USER_DATA
    doc = json.loads(ec2.lookup(vm(), ["latest", "dynamic", "instance-identity", "document"]).body)
    assert {k: doc[k] for k in ("instanceId", "region", "availabilityZone", "privateIp", "instanceType", "imageId", "accountId", "pendingTime")} == {
        "instanceId": "i-1b2c3d4e", "region": "RegionOne", "availabilityZone": "nova", "privateIp": "127.0.0.1",
        "instanceType": "m1.small", "imageId": "ami-00000001", "accountId": "proj-1", "pendingTime": "2025-01-02T03:04:05Z",
    }
    assert {"architecture", "version"} <= set(doc)


@pytest.mark.parametrize(
    "tokens, why",
    [
        (["2010-01-01"], "unknown EC2 metadata version"),
        (["latest", "meta-data", "nope"], "no 'nope' in /latest/meta-data/"),
        (["latest", "meta-data", "hostname", "x"], "is a value"),
        (["latest", "meta-data", "public-keys", "0=mykey"], "no '0=mykey'"),
    ],
)
def test_ec2_not_found_says_what(tokens: list[str], why: str) -> None:
    with pytest.raises(PathNotFound) as err:
        ec2.lookup(vm(), tokens)
    assert why in err.value.message()


@pytest.mark.parametrize(
    "instance_id, expected",
    [
        ("1b2c3d4e-1111-4111-8111-111111111111", "i-1b2c3d4e"),
        ("00000000-0000-4000-8000-000000000000", "i-00000000"),
        ("not-a-uuid", "i-%08x" % ec2.ec2_int("not-a-uuid")),
    ],
)
def test_ec2_instance_ids_are_stable(instance_id: str, expected: str) -> None:
    assert ec2.instance_ec2_id(instance_id) == expected
    assert ec2.reservation_id(instance_id) == ec2.reservation_id(instance_id)
    assert ec2.reservation_id(instance_id).startswith("r-") and len(ec2.reservation_id(instance_id)) == 10


def test_dhcp_domain_empty_gives_bare_hostname() -> None:
    assert ec2.lookup(vm(dhcp_domain=""), ["latest", "meta-data", "hostname"]).body == b"vm1"
