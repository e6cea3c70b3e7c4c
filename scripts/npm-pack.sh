# Sourced by scripts that take a package from the npm registry (no node_modules, no lockfile):
# npm_unpack NAME VERSION SHA512 DIR puts the package's files in DIR, after checking its
# tarball against the pinned sha512 (npm's `dist.integrity`); nothing is done when DIR already
# holds that version.
npm_unpack() {
  local name=$1 version=$2 integrity=$3 dir=$4 tmp got
  [ "$(cat "$dir/.npm-version" 2>/dev/null)" = "$name@$version" ] && return 0
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent "$name@$version" >/dev/null)
  got="sha512-$(openssl dgst -sha512 -binary "$tmp/$name-$version.tgz" | base64 -w0)"
  if [ "$got" != "$integrity" ]; then
    echo "$name-$version.tgz: checksum $got, expected $integrity" >&2
    rm -rf "$tmp"
    return 1
  fi
  rm -rf "$dir" && mkdir -p "$dir"
  tar xzf "$tmp/$name-$version.tgz" -C "$dir" --strip-components=1
  echo "$name@$version" > "$dir/.npm-version"
  rm -rf "$tmp"
}
