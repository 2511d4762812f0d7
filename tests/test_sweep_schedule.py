"""The sweep's run loop on a backend that records runs without computing them: the
dependency order, failure isolation, --retry-failed, --status, busy runs left alone."""

from __future__ import annotations

from concurrent.futures import Future

import pytest

from robustlib import record, runner, sweep
from robustlib.__main__ import main

GRID = {"study": "s", "grid": {"family": "zoo", "sizes": ["zoo-0.3m", "zoo-1m"], "seeds": [0]},
        "notebooks": {"01_finetune": {}, "02_attack": {}, "03_adversarial_training": {}, "04_offense_defense": {}}}


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("ROBUSTLIB_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("ROBUSTLIB_REPORTS", str(tmp_path / "reports"))


class Recorder:
    """A backend that, for each job, records its run as the worker would (completed, or
    failed when its key is in ``fail``) without executing the notebook."""

    def __init__(self, slots=2, fail=()):
        self.slots, self.fail, self.order, self.waiting = slots, set(fail), [], []

    def submit(self, payload, resources):
        self.order.append(payload["key"])
        recorded = runner.recorded_parameters(payload["notebook"], payload["params"], payload["study"],
                                              payload["inputs"])
        run = record.RunStore(payload["root"]).create_run(payload["study"], recorded, notebook=payload["notebook"])
        future = Future()
        if payload["key"] in self.fail:
            run.mark_failed(RuntimeError("boom"), cell=7)
            future.set_result({"key": payload["key"], "state": "failed", "error": "RuntimeError: boom", "cell": 7})
        else:
            run.mark_completed()
            future.set_result({"key": payload["key"], "state": "done"})
        return future

    def close(self, cancel=False):
        pass


def test_jobs_run_after_everything_they_need():
    planned = sweep.plan(GRID)
    backend = Recorder()
    outcome = planned.run(backend, progress=False)
    assert outcome.ok and len(outcome.done) == len(planned.jobs)
    seen = set()
    for key in backend.order:
        assert set(planned.by_key[key].deps) <= seen, key
        seen.add(key)
    # nothing runs twice: a second sweep finds every run complete
    again = sweep.plan(GRID).run(Recorder(), progress=False)
    assert again.done == [] and len(again.skipped) == len(planned.jobs)


def test_a_failure_blocks_only_what_needs_it_and_retry_reruns_only_that():
    bad = "01_finetune:password_match/zoo/zoo-1m/seed0"
    planned = sweep.plan(GRID)
    outcome = planned.run(Recorder(fail={bad}), progress=False)
    assert [k for k, _ in outcome.failed] == [bad]
    needs_bad = {"02_attack:password_match/zoo/gcg@1/zoo-1m/seed0",
                 "03_adversarial_training:password_match/zoo/zoo-1m/seed0"}
    assert needs_bad <= set(outcome.blocked)
    assert "02_attack:password_match/zoo/gcg@1/zoo-0.3m/seed0" in outcome.done  # independent: it ran
    assert not any(k.endswith("/all") for k in outcome.done)  # merges need every model
    failure = planned.failures()[0]
    assert failure["job"] == bad and failure["cell"] == 7
    assert failure["error"] == "RuntimeError: boom" and failure["log"].endswith("job.log")

    # a plain rerun leaves the failed job alone (and what needs it)
    backend = Recorder()
    rerun = sweep.plan(GRID).run(backend, progress=False)
    assert backend.order == [] and rerun.failed == [] and bad not in rerun.done
    # --retry-failed reruns the failure and then only what waited on it
    backend = Recorder()
    retried = sweep.plan(GRID).run(backend, retry_failed=True, progress=False)
    assert backend.order[0] == bad and retried.ok
    assert "01_finetune:password_match/zoo/zoo-0.3m/seed0" not in backend.order
    assert all(s == "done" for s in sweep.plan(GRID).states().values())


def test_status_counts_every_state_per_stage(tmp_path, capsys):
    path = tmp_path / "grid.yaml"
    import yaml

    path.write_text(yaml.safe_dump(GRID))
    planned = sweep.plan(GRID)
    planned.run(Recorder(fail={"02_attack:password_match/zoo/gcg@1/zoo-0.3m/seed0"}), progress=False)
    assert main(["sweep", str(path), "--status"]) == 0
    out = capsys.readouterr().out
    rows = {p[0]: p[1:] for p in (line.split() for line in out.splitlines()) if p and p[0][:2].isdigit()}
    # columns: jobs done running failed interrupted pending
    assert rows["01_finetune"] == ["3", "3", "0", "0", "0", "0"]
    assert rows["02_attack"] == ["3", "1", "0", "1", "0", "1"]
    assert rows["04_offense_defense"][-1] == "1"
    assert "failed 02_attack:password_match/zoo/gcg@1/zoo-0.3m/seed0: cell 7: RuntimeError: boom; log: " in out


def test_a_run_another_process_is_executing_is_waited_for_not_run_again(monkeypatch):
    planned = sweep.plan(GRID)
    first = planned.jobs[0]
    run = planned.run_of(first.key)

    class Busy(Recorder):
        def submit(self, payload, resources):
            if payload["key"] == first.key:
                self.order.append(payload["key"])
                f = Future()
                f.set_result({"key": first.key, "state": "busy"})
                # the other process finishes while the sweep watches
                recorded = runner.recorded_parameters(payload["notebook"], payload["params"], payload["study"],
                                                      payload["inputs"])
                record.RunStore(payload["root"]).create_run(payload["study"], recorded,
                                                            notebook=payload["notebook"]).mark_completed()
                return f
            return super().submit(payload, resources)

    monkeypatch.setattr("robustlib.sweep.schedule.POLL_SECONDS", 0.01)
    backend = Busy()
    outcome = planned.run(backend, progress=False)
    assert outcome.ok and backend.order.count(first.key) == 1 and run.completed


def test_a_local_ray_instance_that_fails_to_start_is_started_again(monkeypatch):
    """On a loaded machine Ray's raylet can give up on its metrics agent and the start
    fails: a new local instance is tried again (what started is shut down first), up
    to RAY_START_ATTEMPTS times; a given cluster address is not retried."""
    import sys
    import types

    from robustlib.sweep import backends

    calls = []

    def init(**kwargs):
        calls.append(("init", kwargs.get("address")))
        if len([c for c in calls if c[0] == "init"]) < failures:
            raise Exception("The current node timed out during startup.")

    fake = types.SimpleNamespace(
        is_initialized=lambda: False, init=init, shutdown=lambda: calls.append(("shutdown", None)),
        remote=lambda fn: fn, cluster_resources=lambda: {"CPU": 2.0})
    monkeypatch.setitem(sys.modules, "ray", fake)
    assert backends.RAY_START_ATTEMPTS == 3
    failures = 3  # the third try starts
    monkeypatch.setattr("tenacity.nap.time.sleep", lambda s: None)
    backend = backends.RayBackend(num_cpus=2)
    assert backend.slots == 2
    assert calls == [("init", None), ("shutdown", None)] * 2 + [("init", None)]
    calls.clear()
    failures = 4  # never within three tries: the last error is raised
    with pytest.raises(Exception, match="timed out during startup"):
        backends.RayBackend(num_cpus=2)
    assert [c[0] for c in calls].count("init") == 3
    calls.clear()
    with pytest.raises(Exception, match="timed out during startup"):
        backends.RayBackend(address="ray://head:10001")  # a cluster's address: tried once
    assert calls == [("init", "ray://head:10001"), ("shutdown", None)]
