import threading
import time

import pytest

from flaretune.errors import ConfigError
from flaretune.streaming.chunks import build_manifest, need_all
from flaretune.streaming.schedule import ChunkScheduler, Reply, TransferError

OK = Reply("ok")


@pytest.fixture
def manifest(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"a" * 10)
    (tmp_path / "b.bin").write_bytes(b"b" * 5)
    return build_manifest(tmp_path, 4)


def _drain(scheduler, reply_for=lambda name, index: {"site-1": OK}):
    sent = []
    while (item := scheduler.next()) is not None:
        entry, chunk = item
        sent.append((entry.name, chunk.index))
        scheduler.record(entry.name, chunk.index, reply_for(entry.name, chunk.index))
    return sent


def test_sends_the_union_of_what_sites_need_in_file_order(manifest):
    scheduler = ChunkScheduler(manifest, {"site-1": {"b.bin": [1]}, "site-2": {"a.bin": [2, 0]}})
    assert _drain(scheduler) == [("a.bin", 0), ("a.bin", 2), ("b.bin", 1)]


def test_refused_chunk_is_resent_then_accepted(manifest):
    refusals = {("a.bin", 1): 2}

    def replies(name, index):
        if refusals.get((name, index), 0) > 0:
            refusals[(name, index)] -= 1
            return {"site-1": OK, "site-2": Reply("nack", "a.bin: chunk 1 failed sha256")}
        return {"site-1": OK, "site-2": OK}

    scheduler = ChunkScheduler(manifest, {"site-1": need_all(manifest)}, max_retries=2)
    sent = _drain(scheduler, replies)
    assert sent[:4] == [("a.bin", 0), ("a.bin", 1), ("a.bin", 1), ("a.bin", 1)]
    assert scheduler.retries == 2


def test_chunk_refused_past_max_retries_fails_naming_site_and_file(manifest):
    scheduler = ChunkScheduler(manifest, {"site-2": need_all(manifest)}, max_retries=1)
    with pytest.raises(TransferError, match=r"site-2 failed on file b\.bin: chunk 0 still refused after 2 attempts"):
        _drain(scheduler, lambda n, i: {"site-2": Reply("nack", "bad") if n == "b.bin" else OK})


def test_fail_reply_stops_at_once(manifest):
    scheduler = ChunkScheduler(manifest, {"site-1": need_all(manifest)})
    with pytest.raises(TransferError, match="site-1 failed on file a.bin: sha256"):
        _drain(scheduler, lambda n, i: {"site-1": Reply("fail", "a.bin: sha256 … not published")})
    assert scheduler.next() is None  # every other stream stops too


def test_max_retries_validated(manifest):
    with pytest.raises(ConfigError, match="max_retries"):
        ChunkScheduler(manifest, {}, max_retries=-1)


def test_parallel_streams_share_the_queue_and_wait_for_resends(manifest):
    """A stream that finds the queue empty must wait: a chunk in flight elsewhere may come back."""
    scheduler = ChunkScheduler(manifest, {"site-1": need_all(manifest)}, max_retries=1)
    refuse_once = {("a.bin", 0)}
    sent, lock = [], threading.Lock()

    def stream():
        while (item := scheduler.next()) is not None:
            entry, chunk = item
            with lock:
                sent.append((entry.name, chunk.index))
                bad = (entry.name, chunk.index) in refuse_once
                refuse_once.discard((entry.name, chunk.index))
            scheduler.record(entry.name, chunk.index, {"site-1": Reply("nack") if bad else OK})

    threads = [threading.Thread(target=stream) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(sent) == sorted([("a.bin", 0), ("a.bin", 0), ("a.bin", 1), ("a.bin", 2), ("b.bin", 0), ("b.bin", 1)])
    assert scheduler.next() is None


def test_a_lost_chunk_waits_longer_before_each_resend_while_a_refused_one_goes_at_once(manifest):
    scheduler = ChunkScheduler(manifest, {"site-1": {"a.bin": [0]}}, max_retries=3, retry_delay=0.2)
    replies = [Reply("lost", "no reply (COMMUNICATION_ERROR)"), Reply("lost", "no reply"), Reply("nack", "sha"), OK]
    waits = []
    for reply in replies:
        started = time.monotonic()
        entry, chunk = scheduler.next()
        waits.append(time.monotonic() - started)
        scheduler.record(entry.name, chunk.index, {"site-1": reply})
    assert scheduler.next() is None and scheduler.error is None
    assert waits[1] >= 0.2 and waits[2] >= 0.4  # after each lost reply: 0.2 s, then twice that
    assert waits[3] < 0.1  # a refused chunk (bad sha256) is resent at once


def test_retry_delay_is_validated(manifest):
    with pytest.raises(ConfigError, match="retry_delay"):
        ChunkScheduler(manifest, {}, retry_delay=-1)
