#!/bin/sh
# check-format.sh: fails (exit 1) when a tracked C file differs from what clang-format makes of it with
# the repository's .clang-format; prints each such file. `tools/check-format.sh --fix` rewrites them.
set -e
cd "$(dirname "$0")/.."
command -v clang-format >/dev/null || { echo "check-format: clang-format is not installed" >&2; exit 2; }
fix=0
[ "${1:-}" = "--fix" ] && fix=1
bad=0
for f in $(git ls-files '*.c' '*.h' '*.cu'); do
    if [ $fix = 1 ]; then
        clang-format -i "$f"
    elif ! clang-format "$f" | cmp -s - "$f"; then
        echo "check-format: $f is not clang-formatted (tools/check-format.sh --fix)"
        bad=1
    fi
done
[ $bad = 0 ] && echo "check-format: $(git ls-files '*.c' '*.h' '*.cu' | wc -l) C files clang-formatted"
exit $bad
