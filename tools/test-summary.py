#!/usr/bin/env python3
"""Counts test results across meson test logs and lists what was skipped.

Usage: test-summary.py [LABEL=]testlog.json...

TAP tests count each case ("ok", "not ok", "# SKIP"); a TAP program that
skipped as a whole ("1..0 # SKIP reason") counts as one skip; other tests
count once (exit 77 is a skip).  A test program that failed without
reporting a failing case (a crash, a timeout) counts as one failure.

Prints every skipped test with its reason (the TAP "# SKIP reason", or the
last line a non-TAP test printed), then, as the LAST line,
"N passed, N failed, N skipped".
"""
import json
import re
import sys

CASE = re.compile(r"^(not )?ok\s+\d+\s*(?:-\s*)?([^#]*?)\s*(?:#\s*(?:(SKIP)\b\s*)?(.*))?$", re.I)
PLAN_SKIP = re.compile(r"^1\.\.0\s*#\s*SKIP\b\s*(.*)$", re.I)


def last_line(*texts):
    for text in texts:
        lines = [l.strip() for l in (text or "").splitlines() if l.strip()]
        if lines:
            return lines[-1]
    return "no reason given"


def main(args):
    passed = failed = skipped = 0
    skips = []  # (label, test, case, reason)
    for arg in args:
        label, _, path = arg.rpartition("=")
        if not label:
            label = path.split("/meson-logs/")[0] if "/meson-logs/" in path else path
        try:
            lines = open(path).read().splitlines()
        except OSError as e:
            print(f"missing test log {path}: {e}")
            failed += 1
            continue
        for line in lines:
            t = json.loads(line)
            name = t.get("name", "?").split(" / ")[-1]
            out = t.get("stdout") or ""
            res = t.get("result", "")
            cases = [m for m in (CASE.match(l) for l in out.splitlines()) if m]
            plan_skip = next((m for m in (PLAN_SKIP.match(l) for l in out.splitlines()) if m), None)
            if t.get("protocol") == "tap" or cases or plan_skip:
                p = f = s = 0
                for m in cases:
                    if m.group(1):
                        f += 1
                    elif (m.group(3) or "").upper() == "SKIP":
                        s += 1
                        skips.append((label, name, m.group(2), m.group(4) or "no reason given"))
                    else:
                        p += 1
                if plan_skip and not cases:
                    s += 1
                    skips.append((label, name, "", plan_skip.group(1) or "no reason given"))
                if res not in ("OK", "SKIP", "EXPECTEDFAIL") and f == 0:
                    f = 1
                passed += p
                failed += f
                skipped += s
            elif res in ("OK", "EXPECTEDFAIL"):
                passed += 1
            elif res == "SKIP":
                skipped += 1
                skips.append((label, name, "", last_line(out, t.get("stderr"))))
            else:
                failed += 1
    if skips:
        print(f"skipped ({len(skips)}):")
        for label, name, case, reason in skips:
            what = f"{name} {case}" if case else name
            print(f"  {label}: {what}: {reason}")
    print(f"{passed} passed, {failed} failed, {skipped} skipped")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
