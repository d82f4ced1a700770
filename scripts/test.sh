#!/usr/bin/env bash
# `bun run test`: installs the system tools the suite needs, where it can, then runs `bun test`.
#
# Bun and Java are the only prerequisites. haproxy, openssl, protoc, g++,
# libprotobuf-dev and ss (iproute2) are Debian packages: installed here when
# this runs as root or with password-less sudo; otherwise this names the one
# command that would, and the tests needing them skip with a one-line reason.
# cfn-lint is Python (pip install cfn-lint). With CI=true nothing is skipped:
# a missing tool fails its tests.
set -uo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v java >/dev/null 2>&1 || missing+=(openjdk-17-jre-headless)
command -v haproxy >/dev/null 2>&1 || missing+=(haproxy)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v protoc >/dev/null 2>&1 || missing+=(protobuf-compiler)
command -v g++ >/dev/null 2>&1 || missing+=(g++)
[ -e /usr/include/google/protobuf/util/delimited_message_util.h ] || missing+=(libprotobuf-dev)
command -v ss >/dev/null 2>&1 || missing+=(iproute2)

if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    sudo=()
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo=(sudo -n)
  else
    sudo=none
  fi
  if [ "${sudo[*]}" = none ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "test: missing ${missing[*]}; their tests will be skipped. To run them: sudo apt-get install -y ${missing[*]}" >&2
  else
    echo "test: installing ${missing[*]}" >&2
    if ! { "${sudo[@]}" apt-get update -qq >/dev/null && "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null; }; then
      echo "test: could not install ${missing[*]}; their tests will be skipped. To run them: sudo apt-get install -y ${missing[*]}" >&2
    fi
  fi
fi
command -v cfn-lint >/dev/null 2>&1 || echo "test: cfn-lint is missing; its test will be skipped. To run it: pip install cfn-lint" >&2

exec bun test "$@"
