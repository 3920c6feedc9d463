#!/bin/sh
# A stand-in for a real build: "compiles" hello into dist/ and records what it made.
set -eu
mkdir -p dist/bin dist/share/doc/hello
sed "s/@VERSION@/${VERSION:-dev}/" hello.in > dist/bin/hello
chmod 755 dist/bin/hello
cp README dist/share/doc/hello/
echo "built hello ${VERSION:-dev} on $(hostname) at $(date -u +%Y-%m-%dT%H:%M:%SZ)"
