#!/bin/sh
# Example Docker job: count the lines, words and bytes of every file under
# /inputs. Writes /outputs/counts.tsv, one "path lines words bytes" row per
# file (tab-separated, sorted by path so every replica writes the same bytes),
# then a "total" row; prints the total row on stdout.
set -eu
cd /inputs
find . -type f | LC_ALL=C sort | {
    tl=0 tw=0 tb=0
    printf 'path\tlines\twords\tbytes\n'
    while IFS= read -r f; do
        # shellcheck disable=SC2046 # split wc's three numbers into $1 $2 $3
        set -- $(wc < "$f")
        printf '%s\t%s\t%s\t%s\n' "${f#./}" "$1" "$2" "$3"
        tl=$((tl + $1)) tw=$((tw + $2)) tb=$((tb + $3))
    done
    printf 'total\t%s\t%s\t%s\n' "$tl" "$tw" "$tb"
} > /outputs/counts.tsv
tail -n 1 /outputs/counts.tsv
