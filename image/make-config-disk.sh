#!/bin/bash
# Build a bgp-lb config disk (NoCloud style; filesystem label BGPLB) for one node.
#
#   image/make-config-disk.sh --out node1.iso [--config config.yaml] [--network FILE|DIR]...
#       [--keys authorized_keys] [--firewall firewall.yaml] [--hostname NAME]
#       [--secret FILE]... [--enable-unit UNIT]... [--format iso|vfat]
#
# Layout on the disk (every file optional; without config.yaml the node stays unconfigured):
#   config.yaml        the agent config (validated at boot with `bgp-lb check-config`)
#   network/*.network  systemd-networkd files (also *.netdev, *.link)
#   authorized_keys    root's SSH keys (the only way in: no passwords)
#   firewall.yaml      api_sources / ssh_sources for the nftables policy
#   hostname, secrets/*, chrony/*.sources, enable-units (units from /usr/share/bgp-lb/optional-units)
# ISO 9660 is made with xorriso; vfat with mkfs.vfat + mtools (no mount needed).
set -euo pipefail
out="" fmt=iso
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/network" "$stage/secrets"
die() { echo "make-config-disk: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
    case "$1" in
        --out) out=$2 ;;
        --config) [ -f "$2" ] || die "no such file $2"; cp "$2" "$stage/config.yaml" ;;
        --network)
            if [ -d "$2" ]; then cp "$2"/*.network "$2"/*.netdev "$2"/*.link "$stage/network/" 2>/dev/null || true
            elif [ -f "$2" ]; then cp "$2" "$stage/network/"
            else die "no such file or directory $2"; fi ;;
        --keys) [ -f "$2" ] || die "no such file $2"; cp "$2" "$stage/authorized_keys" ;;
        --firewall) [ -f "$2" ] || die "no such file $2"; cp "$2" "$stage/firewall.yaml" ;;
        --hostname) echo "$2" > "$stage/hostname" ;;
        --secret) [ -f "$2" ] || die "no such file $2"; cp "$2" "$stage/secrets/" ;;
        --enable-unit) echo "$2" >> "$stage/enable-units" ;;
        --format) fmt=$2 ;;
        *) die "unknown argument $1" ;;
    esac
    shift 2 || die "missing value for $1"
done
[ -n "$out" ] || die "--out is required"
rmdir "$stage/network" "$stage/secrets" 2>/dev/null || true
rm -f "$out"
case "$fmt" in
    iso) xorriso -as mkisofs -quiet -V BGPLB -J -r -o "$out" "$stage" ;;
    vfat)
        truncate -s 8M "$out"
        mkfs.vfat -n BGPLB "$out" >/dev/null
        mcopy -s -i "$out" "$stage"/* ::/ ;;
    *) die "--format must be iso or vfat" ;;
esac
echo "config disk $out (label BGPLB, $fmt): $(cd "$stage" && find . -type f | sort | tr '\n' ' ')"
