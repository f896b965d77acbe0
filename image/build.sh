#!/bin/bash
# Build the bgp-lb appliance disk image with Debian's mkosi 14 (docs/image.md): one GPT disk that
# boots by BIOS (extlinux, mkosi.finalize) and by UEFI (shim + GRUB on an ESP, add-esp.sh).
#
#   image/build.sh            -> _work/image/bgp-lb.raw, bgp-lb.qcow2, bgp-lb.manifest, build-info.txt
#
# Env: WORK (default _work), PIP (default .venv/bin/pip), SKIP_APT=1 (do not apt-get install).
# Runs as root on Debian 12 (loop devices, systemd-nspawn). Nothing is fetched inside the image
# build except Debian packages from the host's own apt mirror; the agent, ExaBGP and every Python
# dependency go in as wheels built here.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
WORK=${WORK:-$REPO/_work}
OUT=$WORK/image
TREE=$OUT/tree
CACHE=$WORK/image-cache
WHEELS=$WORK/image-wheels
PIP=${PIP:-$REPO/.venv/bin/pip}
HOST_PKGS="mkosi debootstrap systemd-container gnupg debian-archive-keyring e2fsprogs fdisk util-linux
           extlinux syslinux-common qemu-utils xorriso mtools gdisk dosfstools"

say() { echo "==> $*"; }
t0=$(date +%s)

if [ "${SKIP_APT:-0}" != 1 ]; then
    missing=""
    for p in $HOST_PKGS; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
    if [ -n "$missing" ]; then
        say "installing build host packages:$missing"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        # shellcheck disable=SC2086
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
    fi
fi

# mkosi 14 + Minimize (never used here) can leave a regular file at /dev/loopNpM that silently
# poisons later builds; refuse to run on top of one.
for f in /dev/loop*p*; do
    if [ -f "$f" ]; then echo "stale regular file $f (remove it)" >&2; exit 1; fi
done

# Build from the committed tree (HEAD), not from whatever is half-edited in the checkout;
# IMAGE_FROM_WORKTREE=1 builds the working tree instead (while developing the image itself).
if [ "${IMAGE_FROM_WORKTREE:-0}" = 1 ]; then
    SRC=$REPO
    commit="$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)+worktree"
else
    SRC=$OUT/src
    rm -rf "$SRC"
    mkdir -p "$SRC"
    git -C "$REPO" archive HEAD | tar -x -C "$SRC"
    commit=$(git -C "$REPO" rev-parse --short HEAD)
fi
say "source: $commit"
# The appliance's version (IMAGE_VERSION in the image's os-release: status node.image_version,
# bgplb_build_info{image_version}); IMAGE_VERSION=... from the caller names a release.
image_version="${IMAGE_VERSION:-$(date -u +%Y%m%d)-$commit}"
case "$image_version" in
    *[!A-Za-z0-9._+~-]*|"") echo "IMAGE_VERSION '$image_version': only A-Z a-z 0-9 . _ + ~ -" >&2; exit 2 ;;
esac
say "image version: $image_version"

say "assembling the mkosi project in $TREE"
rm -rf "$TREE" "$OUT/out"
mkdir -p "$TREE/mkosi.conf.d" "$TREE/mkosi.skeleton/etc/apt/sources.list.d" "$OUT/out" "$CACHE" "$WHEELS"
cp "$SRC/image/mkosi.conf" "$SRC/image/mkosi.postinst" "$SRC/image/mkosi.finalize" "$TREE/"
cp -a "$SRC/image/rootfs" "$TREE/mkosi.extra"
# The fleet-wide module and sysctl lists (deploy/) are the reference when they exist.
for d in modules-load.d sysctl.d; do
    if [ -d "$SRC/deploy/$d" ]; then
        mkdir -p "$TREE/mkosi.extra/etc/$d"
        cp "$SRC/deploy/$d/"*.conf "$TREE/mkosi.extra/etc/$d/" 2>/dev/null || true
    fi
done
install -D -m 0644 /dev/null "$TREE/mkosi.extra/usr/lib/bgp-lb/image-version"
echo "$image_version" > "$TREE/mkosi.extra/usr/lib/bgp-lb/image-version"  # mkosi.postinst reads it
install -D -m 0644 "$SRC/docs/image.md" "$TREE/mkosi.extra/usr/share/doc/bgp-lb/image.md" 2>/dev/null || true

# The host's apt mirror (mkosi 14 ignores /etc/apt and hardcodes security.debian.org).
read -r main_uri sec_uri < <(python3 - <<'EOF'
import glob, re
main = sec = None
for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
    for stanza in open(path).read().split("\n\n"):
        uris = re.search(r"^URIs:\s*(\S+)", stanza, re.M)
        suites = re.search(r"^Suites:\s*(.+)$", stanza, re.M)
        if not uris or not suites:
            continue
        if "bookworm-security" in suites.group(1).split():
            sec = sec or uris.group(1)
        elif "bookworm" in suites.group(1).split():
            main = main or uris.group(1)
for line in open("/etc/apt/sources.list") if __import__("os").path.exists("/etc/apt/sources.list") else []:
    f = line.split()
    if len(f) >= 3 and f[0] == "deb":
        if f[2] == "bookworm-security": sec = sec or f[1]
        elif f[2] == "bookworm": main = main or f[1]
print(main or "http://deb.debian.org/debian", sec or "http://deb.debian.org/debian-security")
EOF
)
printf '[Distribution]\nMirror=%s\n' "$main_uri" > "$TREE/mkosi.conf.d/10-mirror.conf"
echo "deb $sec_uri bookworm-security main" > "$TREE/mkosi.skeleton/etc/apt/sources.list.d/bookworm-security.list"
say "apt mirror $main_uri, security $sec_uri"

say "building wheels (bgp-lb + pinned dependencies) with $PIP"
rm -f "$WHEELS"/bgp_lb-*.whl
"$PIP" wheel --quiet --disable-pip-version-check -w "$WHEELS" "$SRC"
mkdir -p "$TREE/mkosi.extra/opt/bgp-lb/wheels"
cp "$WHEELS"/*.whl "$TREE/mkosi.extra/opt/bgp-lb/wheels/"
ls "$WHEELS" | grep -q '^exabgp-5\.0\.15-' || { echo "exabgp 5.0.15 wheel missing" >&2; exit 1; }
t_wheels=$(date +%s)

say "mkosi build (this takes about a minute)"
mkdir -p /run/systemd/nspawn
unshare -m --propagation private sh -c \
    'mount -t tmpfs tmpfs /run/systemd/nspawn && exec mkosi -C "$0" --cache "$1" --output-dir "$2" -f build' \
    "$TREE" "$CACHE" "$OUT/out"
t_mkosi=$(date +%s)

raw=$(find "$OUT/out" -name 'bgp-lb.raw' -type f | head -n1)
[ -n "$raw" ] || { echo "mkosi produced no bgp-lb.raw" >&2; exit 1; }
mv -f "$raw" "$OUT/bgp-lb.raw"
chmod 0644 "$OUT/bgp-lb.raw"
manifest=$(find "$OUT/out" -name 'bgp-lb.raw.manifest' -type f | head -n1)
[ -n "$manifest" ] && mv -f "$manifest" "$OUT/bgp-lb.manifest"
partuuid=$(cat "$OUT/out/bgp-lb.partuuid" 2>/dev/null || find "$OUT/out" -name bgp-lb.partuuid -exec cat {} \;)
fsuuid=$(cat "$OUT/out/bgp-lb.fsuuid" 2>/dev/null || find "$OUT/out" -name bgp-lb.fsuuid -exec cat {} \;)

say "adding the EFI System Partition (UEFI boot; the BIOS path stays as it is)"
"$SRC/image/add-esp.sh" "$OUT/bgp-lb.raw" "$fsuuid" "$CACHE/efi-debs"

say "checking the boot code and converting to qcow2"
# BIOS: gptmbr.bin + LegacyBIOSBootable on the root; UEFI: partition 2 is an ESP with the loader.
cmp -n 440 /usr/lib/syslinux/mbr/gptmbr.bin "$OUT/bgp-lb.raw"
sgdisk -i 1 "$OUT/bgp-lb.raw" | grep -q 'Attribute flags: 0000000000000004'
sgdisk -i 2 "$OUT/bgp-lb.raw" | grep -q 'C12A7328-F81F-11D2-BA4B-00A0C93EC93B'
esp_off=$(( $(partx -g -o START -n 2 "$OUT/bgp-lb.raw" | tr -d ' ') * 512 ))
MTOOLS_SKIP_CHECK=1 mdir -b -i "$OUT/bgp-lb.raw@@$esp_off" ::/EFI/BOOT | grep -q 'BOOTX64.EFI'
rm -f "$OUT/bgp-lb.qcow2"
qemu-img convert -c -O qcow2 "$OUT/bgp-lb.raw" "$OUT/bgp-lb.qcow2"
t_end=$(date +%s)

alloc=$(du -B1 "$OUT/bgp-lb.raw" | cut -f1)
apparent=$(stat -c %s "$OUT/bgp-lb.raw")
qcow=$(stat -c %s "$OUT/bgp-lb.qcow2")
npkgs=$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["packages"]))' "$OUT/bgp-lb.manifest" 2>/dev/null || echo "?")
cat > "$OUT/build-info.txt" <<EOF
built_at=$(date -u +%FT%TZ)
git_commit=$commit
image_version=$image_version
mkosi=$(mkosi --version 2>/dev/null | awk '{print $2}')
partuuid=$partuuid
root_fsuuid=$fsuuid
$(sed 's/^\([^ ]*\) /efi_\1=/' "$OUT/bgp-lb.efi-versions" 2>/dev/null)
seconds_wheels=$((t_wheels - t0))
seconds_mkosi=$((t_mkosi - t_wheels))
seconds_post=$((t_end - t_mkosi))
seconds_total=$((t_end - t0))
raw_apparent_bytes=$apparent
raw_allocated_bytes=$alloc
qcow2_bytes=$qcow
debian_packages=$npkgs
EOF
cat "$OUT/build-info.txt"
max_alloc=$((1024 * 1024 * 1024)); max_qcow=$((400 * 1000 * 1000))
[ "$alloc" -le "$max_alloc" ] || { echo "raw image allocates $alloc bytes > 1 GiB" >&2; exit 1; }
[ "$qcow" -le "$max_qcow" ] || { echo "qcow2 image is $qcow bytes > 400 MB" >&2; exit 1; }
say "done: $OUT/bgp-lb.raw, $OUT/bgp-lb.qcow2 ($((t_end - t0)) s)"
