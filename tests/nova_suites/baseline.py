"""Nova's driver's outcomes on Nova's suites, recorded once per Nova release.

A full run of Nova's suites takes about 22 minutes per driver on 2 cores.
Nova's own driver gives the same outcomes on the same Nova and the same
machine, so ``make nova-suites-baseline`` records them once
(``baseline.json`` beside this file: the Nova version and test id ->
outcome) and ``make nova-suites`` runs the drop-in in full, then Nova's
driver again, live, on every test where the comparison could turn on it
(:func:`recheck`): the drop-in's outcome differs from the recording, the
test is new, or it is a listed divergence. Any other test agrees with a
real run of Nova's driver on this Nova, made on this kind of machine.

``python -m tests.nova_suites.baseline record DIR`` writes baseline.json
from ``DIR/nova.subunit`` (a full run); ``... recheck DIR`` prints the
test ids to run live on Nova's driver, one per line (stestr's
``--load-list``).
"""

from __future__ import annotations

import importlib.metadata
import json
import pathlib
import sys

from tests.nova_suites import compare

BASELINE = pathlib.Path(__file__).resolve().parent / "baseline.json"


def nova_version() -> str:
    return importlib.metadata.version("nova")


def record(directory: pathlib.Path, path: pathlib.Path = BASELINE) -> int:
    found = compare.outcomes(directory / "nova.subunit")
    unfinished = sorted(t for t, status in found.items() if status == compare.UNFINISHED)
    if len(found) < compare.MIN_TESTS or unfinished:
        print(f"not recorded: {len(found)} results, unfinished: {unfinished[:3]}; see nova.log")
        return 1
    document = {"nova": nova_version(), "outcomes": dict(sorted(found.items()))}
    path.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    print(f"{path.name}: {len(found)} outcomes of Nova {document['nova']}'s driver")
    return 0


def load(path: pathlib.Path = BASELINE) -> dict[str, str]:
    """The recorded outcomes, or {} (every test then runs live) for another Nova."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    if document.get("nova") != nova_version():
        print(
            f"{path.name} is for Nova {document.get('nova')}, this is {nova_version()}: "
            "every test runs live on Nova's driver (make nova-suites-baseline records it again)",
            file=sys.stderr,
        )
        return {}
    return dict(document["outcomes"])


def recheck(dropin: dict[str, str], recorded: dict[str, str], listed: dict) -> list[str]:
    """The tests to run live on Nova's driver: every one the comparison could turn on."""
    return sorted(
        test_id
        for test_id, status in dropin.items()
        if recorded.get(test_id) != status or test_id in listed
    )


def merged(recorded: dict[str, str], live: dict[str, str]) -> dict[str, str]:
    """Nova's driver's outcomes: the recording, and the live run where there is one."""
    return {**recorded, **live}


def stale(recorded: dict[str, str], live: dict[str, str]) -> list[str]:
    """Tests whose live outcome on Nova's driver is no longer the recorded one."""
    return sorted(t for t, status in live.items() if t in recorded and recorded[t] != status)


def main(command: str, directory: str) -> int:
    where = pathlib.Path(directory)
    if command == "record":
        return record(where)
    if command == "recheck":
        dropin = compare.outcomes(where / "dropin.subunit")
        for test_id in recheck(dropin, load(), compare.divergences()):
            print(test_id)
        return 0
    print(f"unknown command {command!r}: use record or recheck", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
