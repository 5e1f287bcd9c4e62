#!/bin/bash
# netmeta's dhclient script for test/demo guests.
#
# It configures only the guest's own interface (address, MTU, routes) and
# records what the server sent in the guest directory. Unlike the distro
# script it never writes /etc/resolv.conf, hostname or anything else outside
# $NETMETA_GUEST_DIR: guests share the host's filesystem.
#
# Routes follow RFC 3442: when option 121 (classless static routes) is
# present, option 3 (routers) is ignored and only the 121 routes are
# installed; a 0.0.0.0 gateway means on-link. Routes we install are tagged
# "proto dhcp" so that a renewal replaces exactly them (in place: see bind_lease).
set -u
PATH=/usr/sbin:/usr/bin:/sbin:/bin
GUEST_DIR=${NETMETA_GUEST_DIR:-$(dirname "$0")}
ENV_FILE="$GUEST_DIR/env"
EVENTS_FILE="$GUEST_DIR/events"
dev=${interface:-}

record() {
    # Latest event's variables, replaced atomically; plus one line per event.
    local tmp="$ENV_FILE.tmp.$$"
    {
        echo "reason=${reason:-}"
        echo "interface=${interface:-}"
        for v in ip_address subnet_mask broadcast_address routers \
                 rfc3442_classless_static_routes domain_name_servers \
                 domain_name host_name interface_mtu dhcp_server_identifier \
                 dhcp_lease_time ip6_address ip6_prefixlen dhcp6_name_servers \
                 dhcp6_domain_search; do
            eval "echo \"new_$v=\${new_$v:-}\""
        done
        echo "old_ip_address=${old_ip_address:-}"
    } > "$tmp" && mv -f "$tmp" "$ENV_FILE"
    echo "${reason:-} ${new_ip_address:-}${new_ip6_address:-}" >> "$EVENTS_FILE"
}

mask_to_prefix() {
    local IFS=. bits=0 octet
    for octet in $1; do
        case $octet in
            255) bits=$((bits + 8)) ;; 254) bits=$((bits + 7)) ;;
            252) bits=$((bits + 6)) ;; 248) bits=$((bits + 5)) ;;
            240) bits=$((bits + 4)) ;; 224) bits=$((bits + 3)) ;;
            192) bits=$((bits + 2)) ;; 128) bits=$((bits + 1)) ;;
        esac
    done
    echo "$bits"
}

kept=" "

add_route() {
    # $1 destination (a.b.c.d/len), $2 gateway (0.0.0.0 = on-link)
    local shown=${1%/32}
    [ "$shown" = "0.0.0.0/0" ] && shown=default
    kept="$kept$shown "  # as `ip route show` spells it, for prune_routes
    if [ "$2" = "0.0.0.0" ]; then
        ip -4 route replace "$1" dev "$dev" scope link proto dhcp
    else
        ip -4 route replace "$1" via "$2" dev "$dev" proto dhcp ||
            ip -4 route replace "$1" via "$2" dev "$dev" proto dhcp onlink
    fi
}

classless_routes() {
    # Decode "width dest-octets… gw1 gw2 gw3 gw4" groups (spaces or commas).
    set -- $(echo "$1" | tr ',' ' ')
    local width sig net gw i
    while [ $# -gt 0 ]; do
        width=$1; shift
        sig=$(( (width + 7) / 8 ))
        [ $# -ge $((sig + 4)) ] || return 1
        net=""
        for i in 1 2 3 4; do
            if [ "$i" -le "$sig" ]; then net="$net${net:+.}$1"; shift
            else net="$net${net:+.}0"; fi
        done
        gw="$1.$2.$3.$4"; shift 4
        add_route "$net/$width" "$gw"
    done
}

flush() {
    ip -4 route flush dev "$dev" proto dhcp 2>/dev/null
    ip -4 addr flush dev "$dev" 2>/dev/null
}

bind_lease() {
    local prefix
    prefix=$(mask_to_prefix "${new_subnet_mask:-255.255.255.255}")
    if [ -n "${new_interface_mtu:-}" ] && [ "$new_interface_mtu" -ge 68 ]; then
        ip link set dev "$dev" mtu "$new_interface_mtu"
    fi
    if [ -n "${old_ip_address:-}" ] && [ "${old_ip_address}" != "$new_ip_address" ]; then
        ip -4 addr flush dev "$dev"
    fi
    ip -4 addr replace "$new_ip_address/$prefix" broadcast "${new_broadcast_address:-+}" dev "$dev"
    # Replace the lease's routes in place, then drop the ones it no longer
    # has: a renewal that changes nothing never leaves the guest without its
    # route to 169.254.169.254, not even for a moment (flushing first did).
    if [ -n "${new_rfc3442_classless_static_routes:-}" ]; then
        classless_routes "$new_rfc3442_classless_static_routes"
    else
        for router in ${new_routers:-}; do
            add_route default "$router"
            break
        done
    fi
    prune_routes
}

prune_routes() {
    local dst rest
    ip -4 route show dev "$dev" proto dhcp 2>/dev/null | while read -r dst rest; do
        case "$kept" in
            *" $dst "*) ;;
            *) ip -4 route del "$dst" dev "$dev" proto dhcp 2>/dev/null ;;
        esac
    done
}

record
case ${reason:-} in
    MEDIUM|ARPCHECK|ARPSEND) ;;
    PREINIT) ip link set dev "$dev" up ;;
    BOUND|RENEW|REBIND|REBOOT) bind_lease ;;
    EXPIRE|FAIL|RELEASE|STOP) flush ;;
    TIMEOUT) flush; exit 1 ;;
    # DHCPv6 (dhclient -6): the address only; routes come from the router
    # advertisement. -S (stateless) only records the options (INFORM6).
    PREINIT6|INFORM6|DEPREF6) ;;
    BOUND6|RENEW6|REBIND6|REBOOT6)
        if [ -n "${old_ip6_address:-}" ] && [ "${old_ip6_address}" != "${new_ip6_address:-}" ]; then
            ip -6 addr del "$old_ip6_address/${old_ip6_prefixlen:-128}" dev "$dev" 2>/dev/null
        fi
        [ -n "${new_ip6_address:-}" ] &&
            ip -6 addr replace "$new_ip6_address/${new_ip6_prefixlen:-128}" dev "$dev" nodad ;;
    EXPIRE6|RELEASE6|STOP6)
        [ -n "${old_ip6_address:-}" ] && ip -6 addr del "$old_ip6_address/${old_ip6_prefixlen:-128}" dev "$dev" 2>/dev/null ;;
esac
exit 0
