#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
# make-initramfs.sh KERNEL_VERSION OUT [HOST-FILE...] — builds the initramfs
# that tests/test-vm.cpp boots under QEMU: busybox-static, the virtio,
# virtio-serial, 9p and virtiofs modules the Debian kernel ships as modules,
# and guest-init.sh as /init.
# Everything else the guest runs (dbus-daemon, gdbus, the built agent) comes
# from the host's root over 9p, so the image stays tiny and is built at test
# time into the test's temporary directory; nothing binary is committed.
# With HOST-FILEs (test-migration.cpp: QEMU cannot migrate a guest that has
# the 9p share mounted) the guest's programs come in the image instead: each
# file, and for a program every shared library ldd names, is copied to
# /host/<its host path>, and /etc/sidebus-self-contained tells guest-init.sh
# not to mount the host's root.
set -eu

if [ $# -lt 2 ]; then
    echo "usage: $0 KERNEL_VERSION OUT.cpio.gz [HOST-FILE...]" >&2
    exit 2
fi
kver=$1
out=$2
shift 2
here=$(cd "$(dirname "$0")" && pwd)
moddir=/lib/modules/$kver

# What the guest needs, in a working load order (virtio needs virtio_ring):
# virtio-serial for the link, 9p for the host root, virtiofs for the document
# share. The package has no usable modules.dep, so when modinfo is there each
# module's own "depends" puts its dependencies first anyway.
modules="virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci
virtio_console netfs fscache 9pnet 9pnet_virtio 9p fuse virtiofs"

busybox=
for candidate in /bin/busybox /usr/bin/busybox; do
    if [ -x "$candidate" ] && ! ldd "$candidate" >/dev/null 2>&1; then
        busybox=$candidate
        break
    fi
done
if [ -z "$busybox" ]; then
    echo "$0: no statically linked busybox (apt-get install busybox-static)" >&2
    exit 1
fi
if [ ! -d "$moddir/kernel" ]; then
    echo "$0: no modules for kernel $kver in $moddir" >&2
    exit 1
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/sidebus-initramfs.XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/root
mkdir -p "$root/bin" "$root/dev" "$root/proc" "$root/sys" "$root/host" "$root/etc" "$root/lib/modules"
cp "$busybox" "$root/bin/busybox"
ln -s busybox "$root/bin/sh"
cp "$here/guest-init.sh" "$root/init"
chmod 755 "$root/init"

# Every module file once; a module named foo_bar may be in foo-bar.ko.
find "$moddir/kernel" -name '*.ko*' >"$work/modules"
find_module() {
    grep -E "/($1|$(echo "$1" | tr _ -))\.ko(\.xz|\.zst|\.gz)?\$" "$work/modules" | head -n 1
}

# add_module NAME: copy NAME (decompressed: busybox insmod cannot read .ko.zst)
# after its dependencies, unless it is built into this kernel, and list it for
# /init in load order. Recursive: uses only "$1" after recursing.
added=" "
add_module() {
    case $added in *" $1 "*) return 0 ;; esac
    added="$added$1 "
    file=$(find_module "$1")
    if [ -z "$file" ]; then
        if grep -q "/$1\.ko" "$moddir/modules.builtin" 2>/dev/null; then
            return 0
        fi
        echo "$0: module $1 is neither in $moddir/kernel nor built in" >&2
        exit 1
    fi
    if command -v modinfo >/dev/null 2>&1; then
        for dep in $(modinfo -F depends "$file" | tr ',' ' '); do
            add_module "$dep"
        done
        file=$(find_module "$1")
    fi
    target=$root/lib/modules/$1.ko
    case $file in
        *.ko.xz) xz -dc "$file" >"$target" ;;
        *.ko.zst) zstd -q -dc "$file" >"$target" ;;
        *.ko.gz) gzip -dc "$file" >"$target" ;;
        *) cp "$file" "$target" ;;
    esac
    echo "$1" >>"$root/etc/sidebus-modules"
}
: >"$root/etc/sidebus-modules"
for name in $modules; do
    add_module "$name"
done

# The guest's programs, at their host paths (symbolic links followed: each
# path the loader or a command line names is a file of its own here).
if [ $# -gt 0 ]; then
    copy_host_file() {
        [ -e "$root/host$1" ] && return 0
        mkdir -p "$root/host$(dirname "$1")"
        cp -L "$1" "$root/host$1"
    }
    for file in "$@"; do
        [ -e "$file" ] || { echo "$0: $file does not exist" >&2; exit 1; }
        copy_host_file "$file"
        # "libfoo.so => /lib/…/libfoo.so (0x…)" and "/lib64/ld-linux-x86-64.so.2 (0x…)"
        for library in $(ldd "$file" 2>/dev/null | sed -n -e 's/.*=> \(\/[^ ]*\).*/\1/p' -e 's/^[[:space:]]*\(\/[^ ]*\) (0x.*/\1/p'); do
            copy_host_file "$library"
        done
    done
    touch "$root/etc/sidebus-self-contained"
fi

# newc is the only cpio format the kernel unpacks.
if command -v cpio >/dev/null 2>&1; then
    (cd "$root" && find . | LC_ALL=C sort | cpio -o -H newc --quiet) | gzip -1 >"$out.tmp"
else
    (cd "$root" && find . | LC_ALL=C sort | "$busybox" cpio -o -H newc) | gzip -1 >"$out.tmp"
fi
mv "$out.tmp" "$out"
