#!/bin/sh
# RM_FLAG_AT (common/flags.h) reads a flag's type off its field's pointer, so
# that a flag table cannot store a 64-bit value into a 32-bit field. This
# checks that it refuses at compile time every field type it has no flag type
# for, and, so that a broken compiler line cannot pass for a refusal, that
# the ones it has compile with the same line. (An int is a boolean flag, so
# int32_t, the same type, is one too.)
# Usage: test_flag_at.sh CC COMMON_DIR
cc=$1 inc=$2
[ -n "$cc" ] && [ -d "$inc" ] || { echo "usage: $0 CC COMMON_DIR" >&2; exit 2; }
fail=0
compiles() {
    printf '#include <stddef.h>\n#include <stdint.h>\n#include "flags.h"\n%s v;\nconst rm_flag f[] = {{"v", RM_FLAG_AT(&v), "", 0, 0}};\n' "$1" |
        "$cc" -std=c11 -Wall -Wextra -Werror -fsyntax-only -I"$inc" -x c - 2>/dev/null
}
for t in "const char *" uint64_t uint32_t size_t int double; do
    compiles "$t" || { echo "FAIL: a $t field does not compile"; fail=1; }
done
for t in "char *" int64_t int16_t uint16_t uint8_t float "long double" "const char"; do
    if compiles "$t"; then echo "FAIL: a $t field compiles (no flag type reads it)"; fail=1; fi
done
[ $fail = 0 ] && echo "ok: RM_FLAG_AT takes its six field types and refuses eight others"
exit $fail
