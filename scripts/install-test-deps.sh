#!/usr/bin/env bash
# Installs what the test suite needs beyond the Rust toolchain, from Debian's
# packages: etcdctl and etcd (compatibility and differential tests) and protoc
# with the well-known types' .proto files (the etcd-client crate used by the tests
# compiles etcd's protos with them; protobuf-compiler only recommends
# libprotobuf-dev, so --no-install-recommends leaves it out unless named), and
# the C compiler and make that build jemalloc, synod's allocator, and the C++
# compiler that builds libFuzzer for the fuzz targets; ss and prlimit,
# with which the hostile-client tests read a member's listen backlog and take its
# file descriptors.
set -euo pipefail

missing=()
command -v etcdctl >/dev/null 2>&1 || missing+=(etcd-client)
command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
command -v protoc >/dev/null 2>&1 || missing+=(protobuf-compiler)
[ -f /usr/include/google/protobuf/descriptor.proto ] || missing+=(libprotobuf-dev)
command -v cc >/dev/null 2>&1 || missing+=(gcc)
command -v c++ >/dev/null 2>&1 || missing+=(g++)
command -v make >/dev/null 2>&1 || missing+=(make)
command -v ss >/dev/null 2>&1 || missing+=(iproute2)
command -v prlimit >/dev/null 2>&1 || missing+=(util-linux)

if [ ${#missing[@]} -eq 0 ]; then
  echo "test dependencies present: $(etcdctl version | head -n1), $(etcd --version | head -n1), $(protoc --version)"
  exit 0
fi

as_root=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    as_root=(sudo)
  else
    echo "error: need root (or sudo) to install: ${missing[*]}" >&2
    echo "install them with: apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
fi

echo "installing test dependencies: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update -q
"${as_root[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
# The etcd-server package may start a system etcd on 2379/2380; the tests need
# those ports free (and never use a system etcd), so stop it if it runs.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet etcd 2>/dev/null; then
  "${as_root[@]}" systemctl stop etcd || true
  "${as_root[@]}" systemctl disable etcd || true
fi
