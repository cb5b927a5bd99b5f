#!/usr/bin/env bash
# Installs the Debian packages that make test, make demo and CI (.ci/run)
# need and a fresh Debian machine lacks. Run as root; with nothing missing
# it does nothing and needs no root.
#
#   scripts/deps.sh [WHO]   WHO names the caller in messages (default deps)
#
# What needs what:
#   ip        iproute2   make demo builds its namespace topology with ip
#   ethtool   ethtool    make demo turns TX checksum offload off on the veths
#   sysctl    procps     make demo turns ip_forward off in xnat's namespace
#   iptables  iptables   the end-to-end bench's kernel baseline (bench/e2e,
#                        run by make test) is iptables MASQUERADE
#   conntrackd conntrackd control/ha's interoperability tests run a real
#                        conntrackd on a sync link to xnat
#   conntrack conntrack  and check what it committed to the kernel
#   keepalived keepalived cmd/xnatd's failover test runs VRRP (dist/keepalived.conf)
#                        between two xnatd
#   systemd-analyze systemd control/api's test verifies dist/xnatd.service
#
# Go itself (1.26, see go.mod) is not installed from apt: Debian's golang
# package is older. Install it from https://go.dev/dl/.
set -euo pipefail

who=${1:-deps}

# command -> Debian package
declare -A need=(
  [ip]=iproute2
  [ethtool]=ethtool
  [sysctl]=procps
  [iptables]=iptables
  [conntrackd]=conntrackd
  [conntrack]=conntrack
  [keepalived]=keepalived
  [systemd-analyze]=systemd
)

# Root's tools live in the sbin directories, which a user's PATH may lack.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

missing=()
for cmd in $(printf '%s\n' "${!need[@]}" | sort); do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${need[$cmd]}")
done

if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "$who: missing Debian packages: ${missing[*]}" >&2
    echo "$who: run as root to have them installed, or: apt-get install --no-install-recommends ${missing[*]}" >&2
    exit 1
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "$who: missing packages ${missing[*]} (Debian names), and no apt-get to install them" >&2
    exit 1
  fi
  echo "$who: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
  for cmd in "${!need[@]}"; do
    command -v "$cmd" >/dev/null 2>&1 || { echo "$who: $cmd still missing after installing ${need[$cmd]}" >&2; exit 1; }
  done
fi

if ! command -v "${GO:-go}" >/dev/null 2>&1; then
  echo "$who: needs Go 1.26 or newer (https://go.dev/dl/; Debian's golang package is too old)" >&2
  exit 1
fi
