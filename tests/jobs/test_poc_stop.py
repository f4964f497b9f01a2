"""PocNetwork.stop ends every process that names its workspace, also ones that are started again."""

import os
import subprocess
import sys
import time

from flaretune.poc import PocNetwork


def test_stop_ends_a_process_that_is_started_again_after_it_is_killed(tmp_path):
    network = PocNetwork(tmp_path, n_clients=1)
    network.workspace.mkdir(parents=True)
    # a parent that does not name the workspace starts a process that does, three times over: one pass of
    # kills leaves the next one running (how a POC process survived stop() in CI)
    env = dict(os.environ, WS=str(network.workspace), PY=sys.executable)
    parent = subprocess.Popen(
        ["bash", "-c", 'for i in 1 2 3; do "$PY" -c "import time; time.sleep(60)" "$WS"; done'],
        env=env, start_new_session=True,
    )
    try:
        deadline = time.time() + 20
        while not network._workspace_pids() and time.time() < deadline:
            time.sleep(0.1)
        assert len(network._workspace_pids()) == 1

        network.stop()

        assert network._workspace_pids() == []
        assert parent.wait(timeout=10) is not None
    finally:
        if parent.poll() is None:
            parent.kill()
