#!/usr/bin/env bash
# Installs the Redis that `obol run`, the tests and the bench start: Debian 12's Redis 7.0
# (built with TLS and jemalloc; the same major version as deploy/k8s), unpacked into
# $1 (e.g. .venv/opt/redis) from the Debian packages, without root and without touching
# the system. Decision D18 in docs/decisions.md says why.
#
#   tools/fetch_redis.sh DEST
#
# DEST/bin/redis-server and DEST/bin/redis-cli are small wrappers that point the binaries
# at the two libraries unpacked beside them (jemalloc, lzf); everything else they need
# (libc, OpenSSL, libsystemd) is part of every Debian 12 system.
set -euo pipefail

dest=${1:?usage: fetch_redis.sh DEST}
want_version=7.0
packages=(redis-tools libjemalloc2 liblzf1)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
download() {
  # As whoever runs this: apt's sandbox user (_apt) could not write to $work.
  (cd "$work" && apt-get download -q=2 -o APT::Sandbox::User="$(id -un)" "${packages[@]}")
}

echo ">> fetching Debian's Redis ${want_version} (${packages[*]})"
if ! download; then
  # The package lists may be missing or stale (a superseded version is gone from the
  # mirror); refreshing them needs root.
  if [ "$(id -u)" -ne 0 ]; then
    echo "apt-get download failed; run 'sudo apt-get update' and try again" >&2
    exit 1
  fi
  apt-get update -q=2
  download
fi

rm -rf "$dest"
mkdir -p "$dest/bin"
for deb in "$work"/*.deb; do
  dpkg-deb -x "$deb" "$dest/root"
done
rm -rf "$dest/root/usr/share"

# redis-server is redis-check-rdb under another name: Redis picks its mode from argv[0].
for tool in redis-server:redis-check-rdb redis-cli:redis-cli; do
  name=${tool%%:*} binary=${tool#*:}
  cat >"$dest/bin/$name" <<EOF
#!/usr/bin/env bash
here=\$(dirname "\$(readlink -f "\$0")")/..
libs=\$(echo "\$here"/root/usr/lib/*-linux-gnu)
LD_LIBRARY_PATH="\$libs\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" exec -a $name "\$here/root/usr/bin/$binary" "\$@"
EOF
  chmod 755 "$dest/bin/$name"
done

version=$("$dest/bin/redis-server" --version | sed -n 's/.* v=\([0-9.]*\) .*/\1/p')
case "$version" in
  "$want_version".*) ;;
  *)
    echo "expected Redis ${want_version}.x from Debian, got '${version}'" >&2
    exit 1
    ;;
esac
echo "$version" >"$dest/VERSION"
echo ">> Redis ${version} in ${dest}"
