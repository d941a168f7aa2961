#!/usr/bin/env python3
# sdw_checks.py: the bookkeeping of the checklist-style tests (packaging sources, deploy examples,
# check-config): each check prints one ok/FAIL line, and the failures decide the exit code.
"""python3 stdlib only: call check() for each expectation and return finish() from main()."""

failures = []


def check(ok, what, detail=""):
    """Prints 'ok: what', or 'FAIL: what' (with ': detail' when given) and records the failure."""
    if ok:
        print("ok: %s" % what)
    else:
        print("FAIL: %s%s" % (what, ": " + detail if detail else ""))
        failures.append(what)


def finish():
    """The exit code once every check ran: 0 ('PASS'), or 1 with the number of failed checks."""
    if failures:
        print("FAILED: %d check(s)" % len(failures))
        return 1
    print("PASS")
    return 0
