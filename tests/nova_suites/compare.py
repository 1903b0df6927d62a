"""Compare the drop-in's run of Nova's suites with Nova's driver's outcomes.

``python -m tests.nova_suites.compare DIR`` reads ``DIR/dropin.subunit`` (a
full run), Nova's driver's outcomes (``baseline.json``, recorded, and
``DIR/nova.subunit``, the tests :mod:`~tests.nova_suites.baseline` says to
run live, which win), the drop-in run's events (``DIR/events/*.jsonl``) and
``divergences.yaml`` beside this file.
It fails (exit 1, one line per problem) when:

* a test's outcome on the drop-in differs from the baseline and the
  difference is not listed, with its reason, in ``divergences.yaml``;
* a listed divergence no longer diverges (the list must not go stale);
* the tuning raised, or a disk kept Nova's settings for another reason than
  one of :data:`EXPECTED_FALLBACKS` (Nova's tests name disks they never
  create, or leave empty files where their XML names a qcow2).
"""

from __future__ import annotations

import collections
import json
import pathlib
import sys

import subunit
import testtools
import yaml

HERE = pathlib.Path(__file__).resolve().parent
DIVERGENCES = HERE / "divergences.yaml"
# Fewer results than this: a run that did not start (an import error, say),
# which would compare equal to another that did not start.
MIN_TESTS = 2000
# Why a disk may keep Nova's settings in Nova's tests: a measurement that
# fails for these reasons is the designed fall-back, not a fault.
EXPECTED_FALLBACKS = (
    # Nova's unit tests name disks they never create.
    "no such file or device",
    # Nova's functional harness fakes disk creation: the files it leaves are
    # empty, not the qcow2 its XML names.
    "is not in qcow2 format",
)
PASSED = {"success", "xfail", "skip"}
UNFINISHED = "unfinished"


def outcomes(path: pathlib.Path) -> dict[str, str]:
    """test id -> success, fail, skip, xfail, uxsuccess (the last status of each test)."""
    found: dict[str, str] = {}

    def record(test: dict) -> None:
        if test["status"] in ("success", "fail", "skip", "xfail", "uxsuccess"):
            found[test["id"]] = test["status"]
        elif test["status"] == "inprogress":
            # Started and never ended: its worker died (the watchdog ends a hung one).
            found.setdefault(test["id"], UNFINISHED)

    with open(path, "rb") as stream:
        result = testtools.StreamToDict(record)
        result.startTestRun()
        subunit.ByteStreamToStreamResult(stream, non_subunit_name="stdout").run(result)
        result.stopTestRun()
    return found


def divergences() -> dict[str, dict]:
    listed = yaml.safe_load(DIVERGENCES.read_text()) or {}
    for test_id, entry in listed.items():
        if not entry.get("reason") or not entry.get("dropin"):
            raise SystemExit(f"{DIVERGENCES.name}: {test_id} needs 'dropin' and 'reason'")
    return listed


def events(directory: pathlib.Path) -> list[dict]:
    found = []
    for path in sorted(directory.glob("*.jsonl")):
        found += [json.loads(line) for line in path.read_text().splitlines() if line]
    return found


def problems(nova: dict[str, str], dropin: dict[str, str], listed: dict, seen: list[dict]):
    runs = (("Nova's driver", nova, "nova.log"), ("the drop-in", dropin, "dropin.log"))
    broken: set[str] = set()
    for name, run, log in runs:
        if len(run) < MIN_TESTS:
            yield f"the run on {name} has {len(run)} results (< {MIN_TESTS}): see its log"
        for test_id in sorted(t for t, status in run.items() if status == UNFINISHED):
            yield f"{test_id} never finished on {name}: its worker ended ({log} has its stacks)"
        other = dropin if run is nova else nova
        absent = set(other) - set(run)
        if absent:
            # One line for the tests a dead worker never started, not one each.
            yield f"{len(absent)} tests did not run on {name} (e.g. {min(absent)}): see {log}"
        broken |= absent | {t for t, status in run.items() if status == UNFINISHED}
    for test_id in sorted((set(nova) | set(dropin)) - broken):
        before, after = nova.get(test_id, "missing"), dropin.get(test_id, "missing")
        entry = listed.get(test_id)
        if before == after and entry is None:
            continue
        if entry is None:
            yield f"new divergence: {test_id}: {before} on Nova's driver, {after} on the drop-in"
        elif after != entry["dropin"] or before != entry.get("nova", "success"):
            yield (
                f"listed divergence changed: {test_id}: listed {entry.get('nova', 'success')}"
                f" -> {entry['dropin']}, now {before} -> {after}; update {DIVERGENCES.name}"
            )
    for test_id in sorted(set(listed) - set(nova) - set(dropin)):
        yield f"listed divergence not run: {test_id}; remove it from {DIVERGENCES.name}"
    for event in seen:
        if event["exception"] or event["level"] in ("ERROR", "CRITICAL"):
            detail = event.get("traceback", "").strip().splitlines()[-1:] or [""]
            yield f"the tuning raised in {event['test']}: {event['message']} ({detail[0]})"
        elif "keeps Nova's settings" in event["message"] and not any(
            reason in event["message"] for reason in EXPECTED_FALLBACKS
        ):
            yield f"unexpected fall-back in {event['test']}: {event['message']}"


def main(directory: str) -> int:
    from tests.nova_suites import baseline

    where = pathlib.Path(directory)
    dropin = outcomes(where / "dropin.subunit")
    live_path = where / "nova.subunit"
    live = outcomes(live_path) if live_path.exists() else {}
    recorded = baseline.load()
    nova = baseline.merged(recorded, live)
    seen = events(where / "events")
    found = list(problems(nova, dropin, divergences(), seen))
    for line in found:
        print(line)
    for test_id in baseline.stale(recorded, live):
        print(
            f"note: Nova's driver now gives {live[test_id]} for {test_id} "
            f"(recorded: {recorded[test_id]}); make nova-suites-baseline records it again"
        )
    counts = {
        name: collections.Counter(run.values())
        for name, run in (("nova", nova), ("dropin", dropin))
    }
    fallbacks = sum("keeps Nova's settings" in e["message"] for e in seen)
    print(
        f"Nova's driver: {dict(counts['nova'])} ({len(live)} run live, the rest recorded for "
        f"Nova {baseline.nova_version()}); drop-in: {dict(counts['dropin'])}; "
        f"listed divergences: {len(divergences())}; fall-backs for missing disks: {fallbacks}"
    )
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
