"""The harness of ``make nova-suites``: its watchdog, its baseline, its comparison.

A test that deadlocks does not run oslotest's SIGALRM timeout; the watchdog
``tests/nova_suites/rebind.py`` arms around every Nova test is faulthandler's
C thread, so the run goes on and the log has the stacks. Nova's driver's
outcomes come from a recording plus a live run of the tests the comparison
could turn on (``tests/nova_suites/baseline.py``).
"""

import os
import pathlib
import subprocess
import sys
import tempfile
import textwrap

from nova import test

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HANGS = textwrap.dedent(
    """
    import threading

    from tests.nova_suites import rebind  # noqa: F401  (arms the watchdog)
    from nova import test


    class Hangs(test.NoDBTestCase):
        def test_waits_for_ever(self):
            threading.Event().wait()
    """
)


class WatchdogTest(test.NoDBTestCase):
    def test_a_hung_test_ends_its_worker_and_prints_where(self):
        with tempfile.TemporaryDirectory() as where:
            with open(os.path.join(where, "ndt_hangs.py"), "w") as module:
                module.write(HANGS)
            env = dict(os.environ, NDT_TEST_WATCHDOG="3", NDT_NOVA_SUITE="nova",
                       PYTHONPATH=os.pathsep.join([where, ROOT]))  # fmt: skip
            env.pop("OS_TEST_TIMEOUT", None)
            proc = subprocess.run(
                [sys.executable, "-m", "testtools.run", "ndt_hangs.Hangs"],
                capture_output=True, text=True, env=env, cwd=ROOT, timeout=180,
            )  # fmt: skip
        self.assertNotEqual(0, proc.returncode, proc.stdout)
        self.assertIn("Timeout (0:00:03)!", proc.stderr)
        # Every thread's stack; under eventlet a hung green thread shows as the
        # hub's wait, and ``compare`` names the test that never finished.
        self.assertIn("most recent call first", proc.stderr)


class CompareTest(test.NoDBTestCase):
    """What ``compare`` says when a worker died: the unfinished test, then one line."""

    def test_a_dead_worker_is_named_once_not_per_test(self):
        from tests.nova_suites import compare

        ids = [f"t.{n:04d}" for n in range(compare.MIN_TESTS + 10)]
        nova = dict.fromkeys(ids, "success")
        dropin = dict(nova)
        dropin["t.0003"] = compare.UNFINISHED
        for test_id in ids[-5:]:
            del dropin[test_id]
        found = list(compare.problems(nova, dropin, {}, []))
        self.assertEqual(
            [
                "t.0003 never finished on the drop-in: its worker ended"
                " (dropin.log has its stacks)",
                f"5 tests did not run on the drop-in (e.g. {ids[-5]}): see dropin.log",
            ],
            found,
        )


class BaselineTest(test.NoDBTestCase):
    def test_what_runs_live_on_novas_driver(self):
        from tests.nova_suites import baseline

        recorded = {"a": "success", "b": "fail", "c": "success", "d": "success"}
        dropin = {"a": "success", "b": "fail", "c": "fail", "d": "success", "new": "success"}
        listed = {"d": {"dropin": "fail", "reason": "r"}}
        # c differs from the recording, new was never recorded, d is listed.
        self.assertEqual(["c", "d", "new"], baseline.recheck(dropin, recorded, listed))
        live = {"c": "fail", "d": "success", "new": "success"}
        self.assertEqual({**recorded, **live}, baseline.merged(recorded, live))
        self.assertEqual(["c"], baseline.stale(recorded, live))

    def test_a_recording_of_another_nova_is_not_used(self):
        from tests.nova_suites import baseline

        with tempfile.TemporaryDirectory() as where:
            path = os.path.join(where, "baseline.json")
            with open(path, "w") as handle:
                handle.write('{"nova": "33.0.0", "outcomes": {"a": "success"}}')
            self.assertEqual({}, baseline.load(pathlib.Path(path)))

    def test_the_recording_is_for_the_installed_nova_and_whole(self):
        from tests.nova_suites import baseline, compare

        recorded = baseline.load()
        self.assertGreaterEqual(len(recorded), compare.MIN_TESTS)
        self.assertNotIn(compare.UNFINISHED, recorded.values())
