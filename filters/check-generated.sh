#!/bin/sh
# check-generated.sh rebuilds the filter objects and their Go embedding from
# the C sources (go generate ./filters, which runs bpf2go with clang) and fails
# if the result differs from what is committed. Needs clang, llvm-strip, git.
set -eu
cd "$(dirname "$0")/.."
for tool in clang llvm-strip git; do
	command -v "$tool" >/dev/null 2>&1 || { echo "check-generated: $tool is not installed (apt-get install clang llvm git)" >&2; exit 1; }
done
go generate ./filters
if ! git diff --exit-code --stat -- filters/; then
	echo "check-generated: filters/ objects differ from their sources; run 'go generate ./filters' and commit" >&2
	exit 1
fi
untracked=$(git ls-files --others --exclude-standard -- filters/)
if [ -n "$untracked" ]; then
	echo "check-generated: untracked generated files: $untracked" >&2
	exit 1
fi
echo "check-generated: filters/ objects match their sources"
