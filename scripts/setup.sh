#!/usr/bin/env bash
# Installs what netmeta needs on a Debian 12 machine, as root, idempotently:
# the system packages that are missing, and a virtualenv (.venv) holding
# netmeta and its Python dependencies. With --test, also what the test suite
# needs (the openstack CLI, hypothesis, PostgreSQL, haproxy/wrk for benches,
# Neutron, Nova and Keystone from PyPI in virtualenvs of their own,
# and cloud-init's own code, unpacked from Debian's package — never installed,
# because installing it would add boot services to this host). With --vm (and
# with --test, whose suite boots real VMs), also what real VMs need: QEMU,
# qemu-img, mmdebstrap (which builds the image from Debian's packages) and
# the OpenSSH client (`netmeta vm exec` on a VM).
set -euo pipefail
cd "$(dirname "$0")/.."
with_tests=0
with_vm=0
for arg in "$@"; do
  case "$arg" in
    --test) with_tests=1; with_vm=1 ;;
    --vm) with_vm=1 ;;
    *) echo "setup: unknown option $arg (use --test and/or --vm)" >&2; exit 2 ;;
  esac
done

if [ "$(id -u)" -ne 0 ]; then
  echo "setup: run as root (netmeta creates network namespaces and runs dnsmasq)" >&2
  exit 1
fi

# dnsmasq-utils: dhcp_release, which the agent runs for the leases of deleted ports (as Neutron's DHCP agent).
packages=(python3 python3-venv iproute2 dnsmasq-base dnsmasq-utils isc-dhcp-client iptables nftables curl procps radvd)
if [ $with_tests -eq 1 ]; then
  packages+=(postgresql haproxy wrk iputils-ping)
fi
if [ $with_vm -eq 1 ]; then
  packages+=(qemu-system-x86 qemu-utils mmdebstrap gpg debian-archive-keyring e2fsprogs openssh-client)
fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  apt-get update -qq
  # The tests start their own throwaway PostgreSQL; the package must not
  # start a system-wide one. A policy-rc.d answering 101 says so to the
  # maintainer scripts, and goes away right after (unless one was there).
  own_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && own_policy=1
  fi
  trap '[ $own_policy -eq 1 ] && rm -f /usr/sbin/policy-rc.d' EXIT
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  [ $own_policy -eq 1 ] && rm -f /usr/sbin/policy-rc.d && own_policy=0
fi

python=python3
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
.venv/bin/pip install -q --upgrade pip >/dev/null
if [ $with_tests -eq 1 ]; then
  .venv/bin/pip install -q -e '.[test]'
else
  .venv/bin/pip install -q -e .
fi

if [ $with_tests -eq 1 ] && [ ! -d .cache/cloud-init/usr/lib/python3/dist-packages/cloudinit ]; then
  mkdir -p .cache/debs
  (cd .cache/debs && { apt-get download -qq cloud-init 2>/dev/null || { apt-get update -qq && apt-get download -qq cloud-init; }; })
  rm -rf .cache/cloud-init
  dpkg-deb -x .cache/debs/cloud-init_*.deb .cache/cloud-init
fi
# cloud-init's own HTTP stack as Debian 12 ships it (requests 2.28, urllib3
# 1.26): the IPv6 test reads http://[fe80::a9fe:a9fe%25eth0] with it — the
# .venv's newer requests/urllib3 cannot connect to a zone id at all.
DEBIAN_HTTP="python3-requests python3-urllib3 python3-idna python3-certifi python3-charset-normalizer python3-chardet"
if [ $with_tests -eq 1 ] && [ ! -d .cache/debian-http/usr/lib/python3/dist-packages/urllib3 ]; then
  mkdir -p .cache/debs
  (cd .cache/debs && { apt-get download -qq $DEBIAN_HTTP 2>/dev/null || { apt-get update -qq && apt-get download -qq $DEBIAN_HTTP; }; })
  rm -rf .cache/debian-http
  for pkg in $DEBIAN_HTTP; do dpkg-deb -x .cache/debs/${pkg}_*.deb .cache/debian-http; done
fi
# OpenStack's own code, from PyPI, each in a virtualenv of its own under
# .cache: their pins clash with the openstack CLI's in .venv (and Neutron's
# with Keystone's). A marker names the releases, so a second setup is
# instant and changing a pin rebuilds that venv.
cached_venv() {  # DIR WHY PACKAGE...
  local dir=$1 why=$2
  shift 2
  local marker
  marker="$dir/.installed-$(echo "$*" | tr ' =' '_-')"
  [ -e "$marker" ] && return 0
  echo "setup: installing $* into $dir ($why)"
  rm -rf "$dir"
  "$python" -m venv "$dir"
  "$dir/bin/pip" install -q --upgrade pip >/dev/null
  "$dir/bin/pip" install -q "$@" >/dev/null
  touch "$marker"
}
if [ $with_tests -eq 1 ]; then
  # The differential tests (tests/upstream/test_differential.py), ~4 min once.
  cached_venv .cache/upstream-venv "for tests/upstream" neutron==29.0.0 nova==34.0.0
  # netmeta behind a real Keystone (tests/upstream/test_keystone.py), ~3 min once.
  cached_venv .cache/keystone-venv "for tests/upstream/test_keystone.py" keystone==30.0.0
fi
echo "setup: done (.venv/bin/netmeta)"
