#!/usr/bin/env python3
"""Counts test results across meson test logs.

TAP tests count each case ("ok", "not ok", "# SKIP"); other tests count once.
A test program that failed without reporting a failing case (a crash, a
timeout) counts as one failure.  Prints "N passed, N failed, N skipped".
"""
import json
import re
import sys

passed = failed = skipped = 0
for path in sys.argv[1:]:
    try:
        lines = open(path).read().splitlines()
    except OSError as e:
        print(f"missing test log {path}: {e}")
        failed += 1
        continue
    for line in lines:
        t = json.loads(line)
        out = t.get("stdout") or ""
        res = t.get("result", "")
        cases = [l for l in out.splitlines() if re.match(r"^(not )?ok \d+", l)]
        if t.get("protocol") == "tap" or cases:
            p = f = s = 0
            for l in cases:
                if l.startswith("not ok"):
                    f += 1
                elif re.search(r"#\s*SKIP", l, re.I):
                    s += 1
                else:
                    p += 1
            if res not in ("OK", "SKIP", "EXPECTEDFAIL") and f == 0:
                f = 1
            passed += p
            failed += f
            skipped += s
        elif res in ("OK", "EXPECTEDFAIL"):
            passed += 1
        elif res == "SKIP":
            skipped += 1
        else:
            failed += 1
print(f"{passed} passed, {failed} failed, {skipped} skipped")
sys.exit(1 if failed else 0)
