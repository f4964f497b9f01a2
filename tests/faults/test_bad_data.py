"""A site whose data file is malformed (a bad tag, a byte that is not UTF-8) or whose tags are outside the job's
label set, in the simulator: the site answers its task with one ``path:line:`` line naming itself, before it
trains; the job goes on without it while ``min_clients`` is met, and stops with that line when it is not."""

from pathlib import Path

import pytest

from .conftest import fault_job, history_of, simulate_faults

pytestmark = [pytest.mark.integration, pytest.mark.faults]


def _site_data(root: Path) -> None:
    from flaretune.data.clinical import make_clinical_dataset

    make_clinical_dataset(root, n_sites=3, seed=1, skew=0.8, n_train=12, n_test=4)


def _spoil_first_token_line(path: Path, line: bytes) -> int:
    """Replace the file's first ``TOKEN TAG`` line (after its comment header) with ``line``; its line number."""
    lines = path.read_bytes().split(b"\n")
    number = next(i for i, text in enumerate(lines) if text and not text.startswith(b"#"))
    lines[number] = line
    path.write_bytes(b"\n".join(lines))
    return number + 1


def test_a_site_with_a_bad_tag_is_left_out_and_the_job_goes_on_with_the_others(tmp_path):
    data = tmp_path / "data"
    _site_data(data)
    train = data / "site-3" / "train.conll"
    line = _spoil_first_token_line(train, b"fever DISEASE")
    job = fault_job(tmp_path / "job", 2, workflow_args={"min_clients": 2}, data_path=str(data / "{site_name}"))
    returncode, run_dir, log, _ = simulate_faults(job, tmp_path, timeout=300)

    reason = f"data_path: {train}:{line}: bad tag 'DISEASE': expected O, B-TYPE or I-TYPE"
    assert returncode == 0, log[-3000:]
    history = history_of(run_dir)
    assert "error" not in history
    assert [sorted(r["sites"]) for r in history["rounds"]] == [["site-1", "site-2"]] * 2
    assert [r["missing"] for r in history["rounds"]] == [["site-3"]] * 2
    for r in (1, 2):  # asked again each round, refused again with the same line
        assert log.count(f"round {r}/2: no result from site-3: {reason}") == 1
    assert log.count(f"train: site-3: {reason}") == 2  # the site's own log
    assert "round 2/2 done" in log
    assert sorted(history["final"]) == ["site-1", "site-2"]


def test_too_few_sites_with_usable_data_stop_the_job_with_each_sites_path_line_reason(tmp_path):
    from flaretune.data.types import CLINICAL_NOTES_LABELS

    data = tmp_path / "data"
    _site_data(data)
    site2, site3 = data / "site-2" / "train.conll", data / "site-3" / "train.conll"
    line = _spoil_first_token_line(site2, b"caf\xe9 O")  # Latin-1, not UTF-8
    _spoil_first_token_line(site3, b"BRCA1 B-Gene")  # a tag the job's label set lacks
    job = fault_job(tmp_path / "job", 2, workflow_args={"min_clients": 2}, data_path=str(data / "{site_name}"))
    returncode, run_dir, log, _ = simulate_faults(job, tmp_path, timeout=300)

    encoding = (f"data_path: {site2}:{line}: not valid utf-8: byte 0xe9 at column 4 (invalid continuation byte); "
                "re-save the file as UTF-8 or pass the right encoding")
    labels = (f"{data / 'site-3'}: data has tags ['B-Gene'] that the job's label set {CLINICAL_NOTES_LABELS} lacks; "
              "add them to the persistor's 'labels'")
    message = f"round 1/2: 1 result(s) accepted, 2 needed (min_clients); site-2: {encoding}; site-3: {labels}"
    history = history_of(run_dir)
    assert history["error"] == message
    assert history["rounds"] == []
    assert message in log
    assert f"train: site-2: {encoding}" in log and f"train: site-3: {labels}" in log
    assert "site-3 round 0:" not in log and "site-2 round 0:" not in log  # neither trained
    assert "round 1/2 done" not in log
