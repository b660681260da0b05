#!/usr/bin/env bash
# Builds the Debian package of offsite with cargo-deb:
#
#   scripts/package.sh     -> target/debian/offsite_<version>-1_<arch>.deb (path printed last)
#   apt install ./target/debian/offsite_*.deb
#
# The package holds /usr/bin/offsite (the release binary: no debug info), bash/zsh/fish
# completions and the man page (generated here from the binary's own clap definitions), the
# systemd units of scripts/, the example offsite.toml and providers.d/ files, README.md and
# docs/. What goes where is [package.metadata.deb] in Cargo.toml.
#
# Installs cargo-deb (`cargo install cargo-deb --locked`) if it is missing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { printf '==> %s\n' "$*" >&2; }

if ! cargo deb --version >/dev/null 2>&1; then
    log "installing cargo-deb (cargo install cargo-deb --locked)"
    cargo install cargo-deb --locked >&2
fi

log "building the release binary"
cargo build --release >&2

log "generating completions and the man page"
gen=target/package
mkdir -p "$gen"
bin=target/release/offsite
"$bin" completions bash >"$gen/offsite.bash"
"$bin" completions zsh >"$gen/_offsite"
"$bin" completions fish >"$gen/offsite.fish"
"$bin" man | gzip -9n >"$gen/offsite.1.gz"

log "packaging"
# --no-build: the binary above is the one packaged; cargo-deb strips what is left of symbols.
cargo deb --no-build >&2
deb=$(ls -t target/debian/offsite_*.deb | head -1)
log "built $deb"
echo "$deb"
