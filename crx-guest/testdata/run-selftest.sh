#!/bin/sh
# Builds selftest.c as a static-pie executable into a root-filesystem directory with the
# host's static busybox and runs it in a pod VM: `cargo xtask pod run` exits with its code.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out="$root/target/crx-guest-selftest"
rm -rf "$out" && mkdir -p "$out/bin" "$out/tmp"
gcc -O1 -static-pie -o "$out/bin/selftest" "$here/selftest.c"
cp /bin/busybox "$out/bin/busybox"
ln -s busybox "$out/bin/sh"
cd "$root"
exec cargo xtask pod run --image "$out" --timeout 120 -- /bin/selftest arg
