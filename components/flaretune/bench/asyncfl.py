"""``flaretune bench async``: synchronous FedAvg vs asynchronous FedBuff with the same straggler.

Both run the server loops the FLARE controllers run (:func:`~flaretune.aggregation.rounds.run_rounds` for
FedAggController, :func:`~flaretune.aggregation.asyncrounds.run_buffered` for FedBuffController) with the same
Strategy, in one process, against in-process sites on threads: a small softmax-regression task on seeded,
label-skewed synthetic sites (numpy; each local task is ``--local-steps`` full-batch gradient steps). A site's
compute time is modelled by a sleep — ``--fast-seconds`` per task at every site but the last, ``--slow-seconds``
at the last (the straggler) — so the comparison measures the workflows, not this machine's load. After every
round or server update the global model is scored on the pooled test split; the report is the wall time until
the score first reaches ``--target`` (and the ratio synchronous / FedBuff), with both rows printed side by side.
"""

import argparse
import json
import queue
import threading
import time
from pathlib import Path

import numpy as np


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sites", type=int, default=3, help="sites; the last one is the straggler (default 3)")
    parser.add_argument("--fast-seconds", type=float, default=0.2, help="seconds per task at a fast site (0.2)")
    parser.add_argument("--slow-seconds", type=float, default=1.0, help="seconds per task at the straggler (1.0)")
    parser.add_argument("--buffer-size", type=int, default=2, help="FedBuff's K (default 2)")
    parser.add_argument("--staleness", default="sqrt", help="FedBuff's staleness weight (default sqrt)")
    parser.add_argument("--aggregator", default="fedavg", help="the strategy of both workflows (default fedavg)")
    parser.add_argument("--target", type=float, default=0.85, help="test accuracy to reach (default 0.85)")
    parser.add_argument("--max-rounds", type=int, default=100, help="synchronous rounds at most (default 100)")
    parser.add_argument("--max-updates", type=int, default=600, help="FedBuff server updates at most (default 600)")
    parser.add_argument("--local-steps", type=int, default=2, help="gradient steps per local task (default 2)")
    parser.add_argument("--skew", type=float, default=0.7,
                        help="share of each site's data in its two main classes (default 0.7; 1: only those)")
    parser.add_argument("--seed", type=int, default=0, help="data and model seed (default 0)")
    parser.add_argument("--json", default="", help="write the result here")


# ---- the task: softmax regression on label-skewed sites ----
def make_sites(n_sites: int, seed: int, skew: float = 0.7, dim: int = 20, classes: int = 4, n_train: int = 200,
               n_test: int = 100):
    rng = np.random.default_rng(seed)
    means = rng.normal(0, 1.0, (classes, dim))
    scales = np.logspace(-0.5, 0.5, dim)  # features on scales 0.3..3: gradient descent needs many steps
    sites = []
    for i in range(n_sites):
        # label skew: site i holds mostly classes i and i+1 (share 1 - skew spread over the others); skew 1:
        # only those two, so with 3 sites and 4 classes the straggler alone holds class 3
        shares = np.full(classes, (1 - skew) / (classes - 2))
        shares[[i % classes, (i + 1) % classes]] = skew / 2
        y = rng.choice(classes, size=n_train, p=shares)
        sites.append((scales * (means[y] + rng.normal(0, 1.5, (n_train, dim))), y))
    y_test = rng.integers(0, classes, n_test * n_sites)
    test = (scales * (means[y_test] + rng.normal(0, 1.5, (len(y_test), dim))), y_test)
    init = {"W": np.zeros((dim, classes), np.float32), "b": np.zeros(classes, np.float32)}
    return sites, test, init


def _probs(params, x):
    z = x @ params["W"].astype(np.float64) + params["b"].astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def local_train(params, data, steps: int, lr: float = 0.01):
    x, y = data
    w, b = params["W"].astype(np.float64), params["b"].astype(np.float64)
    onehot = np.eye(w.shape[1])[y]
    for _ in range(steps):
        g = _probs({"W": w, "b": b}, x) - onehot
        w, b = w - lr * x.T @ g / len(y), b - lr * g.mean(axis=0)
    return {"W": w.astype(np.float32), "b": b.astype(np.float32)}


def accuracy(params, test) -> float:
    x, y = test
    return float((_probs(params, x).argmax(axis=1) == y).mean())


# ---- the drivers ----
class _Sites:
    """What both drivers share: the sites' data and pace, the score after each update, the stop at the target."""

    def __init__(self, args, sites, test):
        self.args, self.data, self.test = args, sites, test
        self.names = [f"site-{i + 1}" for i in range(len(sites))]
        self.curve, self.started, self.reached = [], time.monotonic(), None
        self.tasks = {name: 0 for name in self.names}

    def work(self, site: str, model):
        from flaretune.aggregation.rounds import SiteResult

        slow = site == self.names[-1]
        time.sleep(self.args.slow_seconds if slow else self.args.fast_seconds)
        self.tasks[site] += 1
        data = self.data[self.names.index(site)]
        return SiteResult(local_train(model, data, self.args.local_steps), len(data[1]))

    def available_clients(self):
        return list(self.names)

    def publish(self, global_model, round_number, final):
        seconds, score = time.monotonic() - self.started, accuracy(global_model, self.test)
        self.curve.append((round(seconds, 3), score))
        if self.reached is None and score >= self.args.target:
            self.reached = (seconds, round_number + 1)
        return f"update-{round_number}"

    def aborted(self):
        return self.reached is not None

    def info(self, message):
        pass

    warn = info

    def fail(self, message):
        raise RuntimeError(message)


def _sync_driver(base):
    from flaretune.aggregation.rounds import RoundDriver

    class Sync(base, RoundDriver):
        def train(self, round_number, sites, global_model, meta):
            out = {}
            threads = [threading.Thread(target=lambda s=s: out.__setitem__(s, self.work(s, global_model)))
                       for s in sites]
            for t in threads:
                t.start()
            for t in threads:  # the round barrier: every selected site, the straggler included
                t.join()
            return out

    return Sync


def _async_driver(base):
    from flaretune.aggregation.asyncrounds import AsyncDriver

    class Async(base, AsyncDriver):
        def __init__(self, *a):
            super().__init__(*a)
            self.done = queue.Queue()

        def dispatch(self, site, version, global_model, meta):
            threading.Thread(target=lambda: self.done.put((site, self.work(site, global_model))), daemon=True).start()

        def next_result(self, timeout):
            try:
                return self.done.get(timeout=timeout)
            except queue.Empty:
                return None

    return Async


def run(args) -> int:
    from flaretune.aggregation.asyncrounds import BufferSettings, run_buffered
    from flaretune.aggregation.buffer import staleness_weight
    from flaretune.aggregation.rounds import MemoryStore, RoundSettings, run_rounds
    from flaretune.aggregation.strategy import make_strategy
    from flaretune.errors import ConfigError

    if args.sites < 2 or not 0 < args.target <= 1:
        raise ConfigError(f"--sites must be >= 2 and --target in (0, 1], got {args.sites} and {args.target}")
    sites, test, init = make_sites(args.sites, args.seed, args.skew)
    out = Path(args.json).parent if args.json else Path.cwd()
    rows = {}
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        sync = _sync_driver(_Sites)(args, sites, test)
        run_rounds(sync, MemoryStore(), make_strategy(args.aggregator), RoundSettings(args.max_rounds, seed=args.seed),
                   dict(init), Path(tmp) / "sync.json")
        fedbuff = _async_driver(_Sites)(args, sites, test)
        settings = BufferSettings(args.max_updates, args.buffer_size, staleness_weight(args.staleness),
                                  args.staleness, args.seed)
        run_buffered(fedbuff, MemoryStore(), make_strategy(args.aggregator), settings, dict(init),
                     Path(tmp) / "fedbuff.json")
    for name, driver in (("fedavg_sync", sync), ("fedbuff", fedbuff)):
        rows[name] = {"seconds_to_target": driver.reached[0] if driver.reached else None,
                      "updates_to_target": driver.reached[1] if driver.reached else None,
                      "best_accuracy": max(score for _, score in driver.curve), "tasks": dict(driver.tasks),
                      "curve": driver.curve}
    a, b = rows["fedavg_sync"]["seconds_to_target"], rows["fedbuff"]["seconds_to_target"]
    report = {"benchmark": "async", "sites": args.sites, "fast_seconds": args.fast_seconds,
              "slow_seconds": args.slow_seconds, "buffer_size": args.buffer_size, "staleness": args.staleness,
              "aggregator": args.aggregator, "target": args.target, "local_steps": args.local_steps,
              "skew": args.skew, "seed": args.seed, **rows, "ratio": a / b if a and b else None}
    print(f"\n{'workflow':<14}{'s to target':>13}{'updates':>9}{'best acc':>10}  tasks per site")
    for name in rows:
        row = rows[name]
        shown = f"{row['seconds_to_target']:.2f}" if row["seconds_to_target"] is not None else "not reached"
        print(f"{name:<14}{shown:>13}{row['updates_to_target'] or '-':>9}{row['best_accuracy']:>10.3f}  "
              f"{', '.join(f'{s} {n}' for s, n in row['tasks'].items())}")
    print(f"ratio (synchronous / FedBuff wall time to accuracy {args.target:g}): "
          + (f"{report['ratio']:.2f}x" if report["ratio"] else "n/a (a workflow did not reach the target)"))
    if args.json:
        out.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    return 0
