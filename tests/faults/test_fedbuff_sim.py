"""FedBuff in the simulator (one run for the module): site-3 is a deliberate straggler (before every task it
waits until site-1 has been sent 3 more tasks: faultsim.StragglerExecutor). The fast sites are handed their next task as soon as they answer, site-3's stale results carry
exactly 1/sqrt(1+s), and the model trains (the sites' loss falls)."""

import math

import pytest

from .conftest import REPO, history_of, records, simulate_faults

pytestmark = [pytest.mark.integration, pytest.mark.faults]

FEDBUFF = "flaretune.aggregation.fedbuff.FedBuffController"
UPDATES = 8
LAG = 3  # tasks site-1 is sent while site-3 holds one


def _job(out, record_dir, **workflow_args) -> "Path":  # noqa: F821
    from flaretune.jobcfg import JobFolder

    folder = JobFolder(REPO / "jobs" / "clinical_ner")
    folder.persistor_args.update({"model_name": "tiny-minilm-ner", "lora_r": 2})
    workflow = folder.workflow()
    workflow["path"] = FEDBUFF
    workflow["args"] = {"num_updates": UPDATES, "buffer_size": 2, "staleness": "sqrt", "aggregator": "fedadam",
                        "server_lr": 0.02, "persistor_id": "persistor", **workflow_args}
    folder.set_quantization("none", ["train", "validate", "submit_model"])
    spec = folder.executor()
    spec["path"] = "faultsim.StragglerExecutor"
    spec["args"].update({"max_steps": 2, "num_threads": 1, "synthetic_train_size": 16, "learning_rate": 5e-3,
                         "stall": {"site-3": []}, "pace_site": "site-1", "lag": LAG, "stall_seconds": 60,
                         "record_dir": str(record_dir)})
    return folder.write(out)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("fedbuff")
    received = tmp_path / "received"
    received.mkdir()
    returncode, run_dir, log, _ = simulate_faults(_job(tmp_path / "job", received), tmp_path, timeout=400)
    assert returncode == 0, log[-3000:]
    return history_of(run_dir), log, received, run_dir


def test_the_fast_sites_never_wait_for_the_straggler(run):
    history, log, received, _ = run
    assert history["workflow"] == "fedbuff" and [r["round"] for r in history["rounds"]] == list(range(UPDATES))
    dispatches = history["dispatches"]
    # while site-3's first task was out (its result closes some update u), each fast site was sent more tasks
    first_slow = next(r["round"] for r in history["rounds"] if any(e["site"] == "site-3" for e in r["sites"]))
    for site in ("site-1", "site-2"):
        versions = [d["version"] for d in dispatches if d["site"] == site]
        assert len([v for v in versions if v <= first_slow]) >= LAG, (site, versions, first_slow)
        # each of its tasks carried the newest model: the versions it was sent never go down
        assert versions == sorted(versions)
    # what the sites received agrees with the server's record: one line per dispatched task (the last ones may
    # have been cancelled in flight, but none arrived that was not dispatched)
    for site in ("site-1", "site-2", "site-3"):
        got = [r["round"] for r in records(received, site)]
        sent = [d["version"] for d in dispatches if d["site"] == site]
        assert got == sent[:len(got)] and len(sent) - len(got) <= 1, (site, got, sent)
    assert len(records(received, "site-3")) < len(records(received, "site-1"))


def test_the_stragglers_stale_updates_carry_the_down_weighted_factor(run):
    history, *_ = run
    used = [e for r in history["rounds"] for e in r["sites"]]
    slow = [e for e in used if e["site"] == "site-3"]
    assert slow, "site-3 never contributed"
    for e in used:
        assert e["weight"] == 1 / math.sqrt(1 + e["staleness"])  # exactly, as the server computed it
    assert all(e["staleness"] >= 1 for e in slow)  # the model moved on while it slept
    assert slow[0]["trained_from"] == 0


def test_the_model_trains(run):
    history, log, _, run_dir = run
    losses = [[e["metrics"]["train_loss"] for e in r["sites"]] for r in history["rounds"]]
    assert sum(losses[-1]) / len(losses[-1]) < sum(losses[0]) / len(losses[0]), losses
    assert sorted(history["final"]) == ["site-1", "site-2", "site-3"]
    assert (run_dir / "global_model" / f"round-{UPDATES - 1:03d}.safetensors").is_file()
    assert f"server update {UPDATES}/{UPDATES}:" in log


def test_a_fedbuff_job_resumes_from_its_checkpoint(run, tmp_path):
    from flaretune.aggregation.checkpoint import Checkpoint
    from flaretune.aggregation.rounds import MemoryStore, state_digest

    first, _, _, run_dir = run
    saved = Checkpoint(run_dir / "checkpoint").load(MemoryStore())
    assert saved["round"] == UPDATES - 1 and saved["strategy"]["step"] == UPDATES
    received = tmp_path / "received"
    received.mkdir()
    job = _job(tmp_path / "job", received, num_updates=UPDATES + 2, resume_from=str(run_dir / "checkpoint"))
    returncode, resumed_dir, log, _ = simulate_faults(job, tmp_path, timeout=400)
    assert returncode == 0, log[-3000:]
    history = history_of(resumed_dir)
    assert [r["round"] for r in history["rounds"]] == list(range(UPDATES + 2))
    assert history["rounds"][:UPDATES] == first["rounds"]
    (resumed,) = history["resumed"]
    assert resumed["after_round"] == UPDATES - 1 and resumed["strategy_step"] == UPDATES  # FedAdam went on
    assert resumed["strategy_sha256"] == state_digest(saved["strategy"])
    # the first task of every site after the restart carried the checkpoint's model (update 8)
    assert {r["round"] for site in ("site-1", "site-2", "site-3") for r in records(received, site)[:1]} == {UPDATES}
