"""A site that sends a bad result, in the simulator: NaN, a wrong-shaped tensor, an inflated example count.
The server rejects that result with one line naming the site and the reason, aggregates the honest sites
alone, and the job goes on."""

import numpy as np
import pytest

from .conftest import fault_job, faultsim, history_of, records, simulate_faults

pytestmark = [pytest.mark.integration, pytest.mark.faults]


def _site_data(root):
    """Three CoNLL sites; site-2 keeps 6 of its 12 training sentences, so the example weights differ."""
    from flaretune.data.clinical import make_clinical_dataset
    from flaretune.data.conll import read_conll, write_conll

    make_clinical_dataset(root, n_sites=3, seed=1, skew=0.8, n_train=12, n_test=4)
    train = root / "site-2" / "train.conll"
    write_conll(read_conll(train)[:6], train)


def test_nan_wrong_shape_and_inflated_count_are_rejected_and_the_honest_weighted_mean_aggregates(tmp_path):
    from safetensors.numpy import load_file

    inflation = faultsim().INFLATION
    data, received = tmp_path / "data", tmp_path / "received"
    _site_data(data)
    received.mkdir()
    # site-3 sends NaN in round 1, a wrong shape in round 2, 1000x its example count in round 3; the job caps
    # a count at 100 (its largest site has 12)
    job = fault_job(tmp_path / "job", 3, "BadResultExecutor", {"min_clients": 2, "max_num_examples": 100},
                    data_path=str(data / "{site_name}"), faults={"site-3": ["nan", "shape", "count"]},
                    record_dir=str(received))
    returncode, run_dir, log, _ = simulate_faults(job, tmp_path, timeout=300)

    assert returncode == 0, log[-3000:]
    site3 = records(received, "site-3")
    assert [r["fault"] for r in site3] == ["nan", "shape", "count"]
    name = site3[0]["tensor"]
    shape = load_file(str(received / "site-3-1.safetensors"))[name].shape
    reasons = [
        f"tensor {name!r} has 1 non-finite value(s) (NaN or Inf)",
        f"tensor {name!r} has shape {(shape[0] + 1, *shape[1:])}, the global model's is {shape}",
        f"example count {12 * inflation} is above the cap max_num_examples=100",
    ]
    history = history_of(run_dir)
    assert "error" not in history
    assert [r["rejected"] for r in history["rounds"]] == [{"site-3": reason} for reason in reasons]
    assert [r["missing"] for r in history["rounds"]] == [[], [], []]
    for r, reason in enumerate(reasons):
        assert log.count(f"round {r + 1}/3: rejected the result of site-3: {reason}") == 1
        assert f"round {r + 1}/3 done" in log
    # each round's global model is exactly the example-weighted mean of what site-1 and site-2 sent
    counts = {site: [rec["num_examples"] for rec in records(received, site)] for site in ("site-1", "site-2")}
    assert counts == {"site-1": [12] * 3, "site-2": [6] * 3}
    for r, record in enumerate(history["rounds"]):
        assert {site: entry["num_examples"] for site, entry in record["sites"].items()} == {"site-1": 12, "site-2": 6}
        one, two = (load_file(str(received / f"{site}-{r}.safetensors")) for site in ("site-1", "site-2"))
        published = load_file(str(run_dir / "global_model" / f"round-{r:03d}.safetensors"))
        assert sorted(published) == sorted(one)
        for key, value in published.items():
            expected = one[key].astype(np.float64) * (12 / 18) + two[key].astype(np.float64) * (6 / 18)
            assert np.array_equal(value, expected.astype(np.float32)), (r, key)
    assert sorted(history["final"]) == ["site-1", "site-2", "site-3"]  # site-3 still scores the final model
