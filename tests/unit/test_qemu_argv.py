"""The QEMU command line of a real VM (pure), the console readers, the image recipe."""

from __future__ import annotations

import dataclasses

import pytest

from netmeta.config import Config, ConfigError
from netmeta.vm import console, qemu
from netmeta.vm.image import DEFAULT_IMAGE, RECIPES, ImageError, Images

INSTANCE = "0f6a1c2e-3b4d-4e5f-8a9b-0c1d2e3f4a5b"


def spec(**changes: object) -> qemu.VmSpec:
    base = qemu.VmSpec(
        name="vm1", instance_id=INSTANCE, mac="fa:16:3e:12:34:56", tap="g-0123456789a",
        disk="/var/lib/netmeta/machines/vm1/disk.qcow2",
        console_log="/var/lib/netmeta/machines/vm1/console.log",
        pid_file="/var/lib/netmeta/machines/vm1/qemu.pid",
        kernel="/img/vmlinuz", initrd="/img/initrd.img", cmdline="root=/dev/vda console=ttyS0",
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def option(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, arg in enumerate(argv) if arg == flag]


def test_tcg_uses_multithreaded_translation_with_a_large_cache() -> None:
    argv = qemu.argv(spec(accel="tcg"))
    assert argv[0] == "qemu-system-x86_64"
    assert option(argv, "-accel") == ["tcg,thread=multi,tb-size=256"]
    assert "-cpu" not in argv  # host CPU passthrough needs KVM
    assert "kvm" not in " ".join(argv)


def test_kvm_uses_the_host_cpu() -> None:
    argv = qemu.argv(spec(accel="kvm"))
    assert option(argv, "-accel") == ["kvm"]
    assert option(argv, "-cpu") == ["host"]
    assert "tcg" not in " ".join(argv)


@pytest.mark.parametrize("accel", ["kvm", "tcg"])
def test_the_vm_looks_like_a_nova_instance(accel: str) -> None:
    argv = qemu.argv(spec(accel=accel))
    assert option(argv, "-uuid") == [INSTANCE]
    (smbios,) = option(argv, "-smbios")
    fields = dict(item.split("=", 1) for item in smbios.split(",")[1:])
    assert smbios.startswith("type=1,")
    # cloud-init's ds-identify enables OpenStack on exactly this product name.
    assert fields["product"] == "OpenStack Nova"
    assert fields["manufacturer"] == "OpenStack Foundation"
    assert fields["uuid"] == fields["serial"] == INSTANCE
    assert option(argv, "-netdev") == ["tap,id=net0,ifname=g-0123456789a,script=no,downscript=no"]
    assert option(argv, "-device")[0] == "virtio-net-pci,netdev=net0,mac=fa:16:3e:12:34:56"
    assert option(argv, "-serial") == ["file:/var/lib/netmeta/machines/vm1/console.log"]
    assert option(argv, "-m") == ["512"] and option(argv, "-smp") == ["1"]
    assert option(argv, "-pidfile") == ["/var/lib/netmeta/machines/vm1/qemu.pid"] and "-daemonize" in argv
    (drive,) = option(argv, "-drive")
    assert drive.startswith("file=/var/lib/netmeta/machines/vm1/disk.qcow2,if=virtio,format=qcow2")


def test_own_images_boot_their_kernel_and_user_images_their_disk() -> None:
    own = qemu.argv(spec())
    assert option(own, "-kernel") == ["/img/vmlinuz"] and option(own, "-initrd") == ["/img/initrd.img"]
    assert option(own, "-append") == ["root=/dev/vda console=ttyS0"]
    user = qemu.argv(spec(kernel="", initrd="", cmdline=""))
    assert "-kernel" not in user and "-append" not in user


def test_commas_in_values_are_doubled() -> None:
    argv = qemu.argv(spec(name="a,b", disk="/x,y/disk.qcow2", smbios_version="1,2"))
    assert option(argv, "-drive")[0].startswith("file=/x,,y/disk.qcow2,if=virtio")
    assert "version=1,,2" in option(argv, "-smbios")[0]
    assert option(argv, "-name") == ["a,,b,process=netmeta-vm-a,,b"]


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"accel": "hvf"}, "accelerator"),
        ({"instance_id": "not-a-uuid"}, "UUID"),
        ({"mac": "FA:16:3E:12:34:56"}, "MAC"),
        ({"mac": "01:16:3e:12:34:56"}, "multicast"),
        ({"tap": "g-0123456789abcdef"}, "tap name"),
        ({"tap": "g,vhost=on"}, "tap name"),
        ({"vcpus": 0}, "vcpus"),
        ({"memory_mb": 16}, "memory"),
        ({"initrd": ""}, "both a kernel and an initrd"),
        ({"kernel": "", "initrd": ""}, "needs a kernel"),
        ({"disk": "disk.qcow2"}, "absolute"),
        ({"console_log": "/a,b/console.log"}, "comma"),
        ({"cmdline": "root=/dev/vda\ninit=/bin/sh"}, "newline"),
    ],
)
def test_specs_qemu_must_not_run_are_refused(changes: dict[str, object], message: str) -> None:
    with pytest.raises(qemu.SpecError, match=message):
        spec(**changes)


FINAL = ("[   61.200000] cloud-init[512]: Cloud-init v. 22.4.2 finished at Tue, 01 Dec 2026 21:10:00 +0000. "
         "Datasource DataSourceOpenStackLocal [net,ver=2].  Up 61.12 seconds\r\n")
NONE = "Cloud-init v. 22.4.2 finished at Tue, 01 Dec 2026 21:10:00 +0000. Datasource DataSourceNone.  Up 90.50 seconds\n"


def test_the_final_message_names_the_datasource() -> None:
    done = console.finished("booting...\n" + FINAL)
    assert done is not None and done.openstack
    assert (done.version, done.datasource, done.detail, done.uptime) == ("22.4.2", "DataSourceOpenStackLocal",
                                                                        "net,ver=2", 61.12)
    fallback = console.finished(NONE)
    assert fallback is not None and not fallback.openstack and fallback.datasource == "DataSourceNone"
    assert console.finished("Cloud-init v. 22.4.2 running 'modules:final'") is None


def test_host_keys_come_from_the_last_block_on_the_console() -> None:
    text = (
        "\x1b[0;32m  OK  \x1b[0m] Started ssh\n"
        "-----BEGIN SSH HOST KEY KEYS-----\nssh-ed25519 AAAAold root@old\n-----END SSH HOST KEY KEYS-----\n"
        "[ 50.1] cloud-init[9]: -----BEGIN SSH HOST KEY KEYS-----\r\n"
        "[ 50.1] cloud-init[9]: ecdsa-sha2-nistp256 AAAAE2VjZHNh+/= root@vm1\r\n"
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5 root@vm1\n"
        "not a key\n"
        "-----END SSH HOST KEY KEYS-----\n"
        "ssh-rsa AAAAoutside root@evil\n"
    )
    keys = console.host_keys(text)
    assert keys == ["ecdsa-sha2-nistp256 AAAAE2VjZHNh+/=", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5"]
    assert console.known_hosts("10.0.0.5", keys) == (
        "10.0.0.5 ecdsa-sha2-nistp256 AAAAE2VjZHNh+/=\n10.0.0.5 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5\n")
    assert console.host_keys("ssh-ed25519 AAAAnoblock") == []


def test_the_recipe_has_what_cloud_init_on_openstack_needs() -> None:
    recipe = RECIPES[DEFAULT_IMAGE]
    assert recipe.suite == "bookworm"
    for package in ("cloud-init", "openssh-server", "isc-dhcp-client", "ifupdown", "linux-image-cloud-amd64"):
        assert package in recipe.packages
    assert "console=ttyS0" in recipe.cmdline and "root=/dev/vda" in recipe.cmdline
    # No datasource_list: cloud-init must find OpenStack from the SMBIOS product, as on a cloud.
    assert not any("datasource_list" in text for text in (*recipe.hooks, *(c for _, c in recipe.files)))
    # A root file system with no partition to grow: resizing it is an error in `cloud-init status`.
    files = dict(recipe.files)
    assert "resize_rootfs: false" in files["etc/cloud/cloud.cfg.d/90-netmeta.cfg"]
    assert files["etc/default/locale"] == "LANG=C.UTF-8\n"


def test_images_refuse_unknown_names_and_missing_files(tmp_path: object) -> None:
    images = Images(Config(state_dir=str(tmp_path), image_dir=f"{tmp_path}/images"))
    assert images.list_all() == [] and images.get(DEFAULT_IMAGE) is None
    with pytest.raises(ImageError, match="no image named 'ubuntu'"):
        images.resolve("ubuntu")
    with pytest.raises(ImageError, match="does not exist"):
        images.resolve(f"{tmp_path}/missing.qcow2")
    with pytest.raises(ImageError, match="no recipe"):
        images.build("ubuntu", print)


@pytest.mark.parametrize("field, value", [("vm_accel", "hvf"), ("vm_memory_mb", 64), ("vm_vcpus", 0)])
def test_vm_settings_are_checked(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=field):
        Config(**{field: value})  # type: ignore[arg-type]


def test_vm_exec_runs_exactly_the_given_argv_remotely() -> None:
    import shlex

    from netmeta.drivers.ssh import ssh_argv

    argv = ssh_argv("/k", "/kh", "debian", "10.0.0.5", ["sh", "-c", "echo $SSH_CLIENT; touch 'a b'"])
    assert argv[0] == "ssh" and "StrictHostKeyChecking=yes" in argv and "UserKnownHostsFile=/kh" in argv
    assert argv[-3:-1] == ["debian@10.0.0.5", "--"]
    assert shlex.split(argv[-1]) == ["sh", "-c", "echo $SSH_CLIENT; touch 'a b'"]
