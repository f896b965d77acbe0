#!/bin/bash
# Append an EFI System Partition to the finished bgp-lb disk, so the same disk boots under UEFI
# (OVMF) as well as under BIOS (SeaBIOS -> extlinux, left untouched). docs/image.md "UEFI".
#
#   image/add-esp.sh RAW FSUUID DEBS_DIR
#
# RAW      the GPT disk mkosi made (root = partition 1, gptmbr.bin, LegacyBIOSBootable)
# FSUUID   the root ext4's filesystem UUID (mkosi.finalize wrote it to bgp-lb.fsuuid)
# DEBS_DIR where Debian's signed shim and GRUB are downloaded (apt-get download; reused)
#
# The ESP (partition 2, after the root, so the root's PARTUUID and extlinux stay as they are) is
# made without any mount: mkfs.vfat on a file, mtools to fill it, dd into the disk. It holds
# Debian's Microsoft-signed shim as the removable-media path \EFI\BOOT\BOOTX64.EFI, Debian's
# signed GRUB (grubx64.efi, which shim verifies) and MokManager, and \EFI\debian\grub.cfg (the
# signed GRUB's built-in prefix), which finds the root by FSUUID and reads /boot/grub/grub.cfg
# there: kernel, initrd and command line live on the root next to extlinux.conf, so no kernel
# is copied to the ESP. Works with Secure Boot on (Microsoft keys enrolled) as well as off.
set -euo pipefail

RAW=$1
FSUUID=$2
DEBS=$3
ESP_MIB=${ESP_MIB:-64}
say() { echo "==> $*"; }

case "$FSUUID" in
    *[!0-9a-fA-F-]*|"") echo "add-esp: bad filesystem UUID '$FSUUID'" >&2; exit 2 ;;
esac
[ "$(partx -g -o NR "$RAW" | wc -l)" = 1 ] || {
    echo "add-esp: $RAW must have exactly one partition (the root)" >&2; exit 2; }

# Debian's signed boot chain, from the host's apt mirror (verified by apt against the archive's
# signed Release file). Not installed on the host: only unpacked.
mkdir -p "$DEBS"
rm -f "$DEBS"/*.deb
pkgs="shim-signed shim-helpers-amd64-signed grub-efi-amd64-signed"
if ! (cd "$DEBS" && apt-get download -qq $pkgs 2>/dev/null); then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    (cd "$DEBS" && apt-get download -qq $pkgs)
fi
tmp=$(mktemp -d "${RAW%/*}/esp.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
for p in $pkgs; do
    deb=$(ls "$DEBS/${p}"_*.deb)
    dpkg-deb -x "$deb" "$tmp/x"
    echo "$p $(dpkg-deb -f "$deb" Version)" >> "$tmp/versions"
done
shim=$tmp/x/usr/lib/shim/shimx64.efi.signed
mm=$tmp/x/usr/lib/shim/mmx64.efi.signed
grub=$tmp/x/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed
for f in "$shim" "$mm" "$grub"; do [ -s "$f" ] || { echo "add-esp: $f missing" >&2; exit 1; }; done

cat > "$tmp/grub.cfg" <<CFG
search --no-floppy --fs-uuid --set=root $FSUUID
set prefix=(\$root)/boot/grub
configfile (\$root)/boot/grub/grub.cfg
CFG

say "ESP: ${ESP_MIB} MiB FAT32 with shim + signed GRUB ($(tr '\n' ' ' < "$tmp/versions"))"
esp=$tmp/esp.img
mkfs.vfat -F 32 -n ESP -C "$esp" $((ESP_MIB * 1024)) >/dev/null
export MTOOLS_SKIP_CHECK=1
mmd -i "$esp" ::/EFI ::/EFI/BOOT ::/EFI/debian
mcopy -i "$esp" "$shim" ::/EFI/BOOT/BOOTX64.EFI
mcopy -i "$esp" "$grub" ::/EFI/BOOT/grubx64.efi
mcopy -i "$esp" "$mm" ::/EFI/BOOT/mmx64.efi
mcopy -i "$esp" "$tmp/grub.cfg" ::/EFI/debian/grub.cfg

# Partition 2 starts at the first 1 MiB boundary after the root; 1 MiB more at the end for the
# backup GPT. sgdisk -e moves the backup GPT to the new end; the MBR boot code (gptmbr.bin) and
# partition 1's attributes are kept (checked below and by build.sh).
root_end=$(partx -g -o END -n 1 "$RAW" | tr -d ' ')
start=$(( (root_end / 2048 + 1) * 2048 ))
sectors=$((ESP_MIB * 2048))
truncate -s $(( (start + sectors + 2048) * 512 )) "$RAW"
# (-e and -n in one call: sgdisk -e alone does not save the moved backup GPT.)
sgdisk -e -n "2:$start:+$sectors" -t 2:ef00 -c "2:EFI System Partition" "$RAW" >/dev/null
[ "$(partx -g -o START -n 2 "$RAW" | tr -d ' ')" = "$start" ]
dd if="$esp" of="$RAW" bs=1M seek=$((start / 2048)) conv=notrunc,sparse status=none
sgdisk -v "$RAW" | grep -q 'No problems found' || { sgdisk -v "$RAW" >&2; exit 1; }
cp "$tmp/versions" "${RAW%.raw}.efi-versions"
