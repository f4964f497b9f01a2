from pathlib import Path

import pytest

from flaretune.data.clinical import make_clinical_dataset
from flaretune.jobcfg import JobFolder

REPO = Path(__file__).resolve().parents[2]
CLINICAL_JOB = REPO / "jobs" / "clinical_ner"


@pytest.fixture(scope="session")
def small_hospitals(tmp_path_factory):
    """Three small synthetic hospitals as CoNLL files (site-N/train.conll, site-N/test.conll)."""
    root = tmp_path_factory.mktemp("hospitals")
    make_clinical_dataset(root, n_sites=3, seed=1, skew=0.8, n_train=24, n_test=12)
    return root


@pytest.fixture(scope="session")
def tiny_clinical_job():
    """Make the shipped clinical_ner job, unchanged but for a tiny model, few rounds and the test data."""

    def make(out_dir, data_root, rounds=2, **executor_args) -> Path:
        job = JobFolder(CLINICAL_JOB)
        job.set_rounds(rounds)
        job.persistor_args["model_name"] = "tiny-minilm-ner"
        job.executor_args.update({"data_path": str(Path(data_root) / "{site_name}"), "max_steps": 3, **executor_args})
        return job.write(out_dir)

    return make
