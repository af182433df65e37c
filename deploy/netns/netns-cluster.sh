#!/usr/bin/env bash
# netns-cluster.sh: N "hosts" on one machine, each a network namespace with its own IP
# address on a shared bridge, for multi-host tests of a shardfleet cluster.
#
#   netns-cluster.sh up N PREFIX [SUBNET]    create namespaces sf-PREFIX-1..N
#   netns-cluster.sh exec I CMD...           run CMD in namespace I (PREFIX from $SF_NETNS_PREFIX)
#   netns-cluster.sh exec PREFIX I CMD...    the same, PREFIX given
#   netns-cluster.sh ip I [PREFIX]           print the address of namespace I
#   netns-cluster.sh status PREFIX           what exists for PREFIX
#   netns-cluster.sh down PREFIX             remove everything `up` made (idempotent)
#
# Layout for `up 3 demo` (SUBNET defaults to 10.77.0):
#
#   root namespace:  bridge sfb-demo  10.77.0.254/24
#                      |-- veth sfh-demo-1  <->  eth0 10.77.0.1/24  in namespace sf-demo-1
#                      |-- veth sfh-demo-2  <->  eth0 10.77.0.2/24  in namespace sf-demo-2
#                      '-- veth sfh-demo-3  <->  eth0 10.77.0.3/24  in namespace sf-demo-3
#
# The root namespace reaches every node through the bridge (so a test or an S3 client
# can run outside the namespaces); the namespaces reach each other and the root's bridge
# address, nothing else: no default route, no forwarding, no NAT. Every name carries
# PREFIX, and each run can take its own SUBNET, so parallel runs do not collide.
#
# Environment: MTU (default 1500) sets the MTU of the bridge and every veth. With the
# default, use max_datagram_size = 1452 in [cluster] (or 1472, IPv4 only); with MTU=9000,
# 8952. The namespaces' loopback stays at 65536 but nodes talk over eth0.
#
# Needs root and iproute2 (ip netns, veth, bridge). Nothing else.

set -euo pipefail

PROG=$(basename "$0")
MTU=${MTU:-1500}
STATE_DIR=/run/shardfleet-netns

die() {
    echo "$PROG: $*" >&2
    exit 1
}

usage() {
    sed -n '4,10p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

check_prefix() {
    # Interface names are limited to 15 characters: "sfh-" + PREFIX + "-" + up to 2 digits.
    [[ $1 =~ ^[a-z][a-z0-9]{0,7}$ ]] ||
        die "PREFIX '$1' must be 1-8 lowercase letters/digits starting with a letter"
}

check_subnet() {
    [[ $1 =~ ^([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})$ ]] ||
        die "SUBNET '$1' must be three octets, e.g. 10.77.0"
    local o
    for o in "${BASH_REMATCH[@]:1}"; do
        ((o <= 255)) || die "SUBNET '$1': octet $o out of range"
    done
}

ns_name() { echo "sf-$1-$2"; }       # PREFIX I
bridge_name() { echo "sfb-$1"; }     # PREFIX
host_veth() { echo "sfh-$1-$2"; }    # PREFIX I

namespaces_of() {
    # Namespaces named sf-PREFIX-<number>; `ip netns list` prints "name (id: N)" or "name".
    ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^sf-$1-[0-9]+$" || true
}

cmd_up() {
    (($# >= 2 && $# <= 3)) || usage
    local n=$1 prefix=$2 subnet=${3:-10.77.0}
    [[ $n =~ ^[0-9]+$ ]] && ((n >= 1 && n <= 99)) || die "N must be 1..99"
    check_prefix "$prefix"
    check_subnet "$subnet"
    [[ $MTU =~ ^[0-9]+$ ]] && ((MTU >= 1280 && MTU <= 65535)) || die "MTU must be 1280..65535"

    local br
    br=$(bridge_name "$prefix")
    if ip link show "$br" >/dev/null 2>&1 || [[ -n $(namespaces_of "$prefix") ]]; then
        die "a cluster with prefix '$prefix' exists already; run '$PROG down $prefix' first"
    fi
    if ip -4 -o addr show | awk '{print $4}' | grep -q "^${subnet//./\\.}\."; then
        die "subnet $subnet.0/24 is already in use in the root namespace; pick another SUBNET"
    fi

    # From here on, a failure removes whatever was made.
    trap 'echo "$PROG: up failed, cleaning up" >&2; cmd_down "$prefix" >/dev/null 2>&1 || true' ERR

    mkdir -p "$STATE_DIR"
    printf 'nodes=%s\nsubnet=%s\nmtu=%s\n' "$n" "$subnet" "$MTU" >"$STATE_DIR/$prefix"

    ip link add "$br" type bridge
    # Bridged frames must not go through the host's iptables (br_netfilter is loaded on
    # many hosts, and a FORWARD policy of DROP would silently cut the nodes apart).
    ip link set "$br" type bridge nf_call_iptables 0 nf_call_ip6tables 0 nf_call_arptables 0 \
        2>/dev/null || true
    ip link set "$br" mtu "$MTU"
    ip addr add "$subnet.254/24" dev "$br"
    ip link set "$br" up

    local i ns hv
    for ((i = 1; i <= n; i++)); do
        ns=$(ns_name "$prefix" "$i")
        hv=$(host_veth "$prefix" "$i")
        ip netns add "$ns"
        ip link add "$hv" mtu "$MTU" type veth peer name eth0 mtu "$MTU" netns "$ns"
        ip link set "$hv" master "$br"
        ip link set "$hv" up
        ip -n "$ns" link set lo up
        ip -n "$ns" addr add "$subnet.$i/24" dev eth0
        ip -n "$ns" link set eth0 up
    done
    trap - ERR
    echo "up: $n namespaces sf-$prefix-1..$n on bridge $br ($subnet.254/24), nodes $subnet.1..$subnet.$n, mtu $MTU"
}

cmd_down() {
    (($# == 1)) || usage
    local prefix=$1 ns br i
    check_prefix "$prefix"
    # Deleting a namespace deletes its eth0 and with it the host end of the veth pair.
    for ns in $(namespaces_of "$prefix"); do
        ip netns del "$ns" 2>/dev/null || true
    done
    # Host ends left over from an interrupted `up` (namespace made, veth not moved yet).
    for i in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1 |
        grep -E "^sfh-$prefix-[0-9]+$" || true); do
        ip link del "$i" 2>/dev/null || true
    done
    br=$(bridge_name "$prefix")
    if ip link show "$br" >/dev/null 2>&1; then
        ip link del "$br"
    fi
    rm -f "$STATE_DIR/$prefix"
    echo "down: $prefix removed"
}

cmd_exec() {
    (($# >= 2)) || usage
    local prefix i
    if [[ $1 =~ ^[0-9]+$ ]]; then
        prefix=${SF_NETNS_PREFIX:-}
        if [[ -z $prefix ]]; then
            # Exactly one cluster running: use it.
            local all
            all=$(ls "$STATE_DIR" 2>/dev/null || true)
            [[ -n $all && $(wc -w <<<"$all") -eq 1 ]] ||
                die "several or no clusters: set SF_NETNS_PREFIX or use 'exec PREFIX I CMD...'"
            prefix=$all
        fi
        i=$1
        shift
    else
        (($# >= 3)) || usage
        prefix=$1 i=$2
        shift 2
    fi
    check_prefix "$prefix"
    local ns
    ns=$(ns_name "$prefix" "$i")
    ip netns list | awk '{print $1}' | grep -qx "$ns" || die "no namespace $ns"
    exec ip netns exec "$ns" "$@"
}

cmd_ip() {
    (($# >= 1 && $# <= 2)) || usage
    local i=$1 prefix=${2:-${SF_NETNS_PREFIX:-}}
    check_prefix "$prefix"
    [[ -f $STATE_DIR/$prefix ]] || die "no cluster '$prefix'"
    local subnet
    subnet=$(sed -n 's/^subnet=//p' "$STATE_DIR/$prefix")
    echo "$subnet.$i"
}

cmd_status() {
    (($# == 1)) || usage
    local prefix=$1 ns
    check_prefix "$prefix"
    [[ -f $STATE_DIR/$prefix ]] && cat "$STATE_DIR/$prefix"
    ip -br addr show dev "$(bridge_name "$prefix")" 2>/dev/null || echo "no bridge $(bridge_name "$prefix")"
    for ns in $(namespaces_of "$prefix"); do
        echo "$ns: $(ip -n "$ns" -4 -br addr show dev eth0 2>/dev/null | awk '{print $3}')"
    done
}

(($# >= 1)) || usage
[[ $EUID -eq 0 ]] || die "must run as root (ip netns, veth, bridge)"
command -v ip >/dev/null || die "iproute2 (ip) not found"
cmd=$1
shift
case $cmd in
up) cmd_up "$@" ;;
down) cmd_down "$@" ;;
exec) cmd_exec "$@" ;;
ip) cmd_ip "$@" ;;
status) cmd_status "$@" ;;
-h | --help | help) usage ;;
*) usage ;;
esac
