"""Secure aggregation without FLARE: fixed point, masks, Shamir, and whole rounds with dropouts."""

import numpy as np
import pytest

from flaretune.ops import secagg as sa
from flaretune.ops.secagg_protocol import ClientParty, ServerParty, default_threshold


def test_fixed_point_round_trip_and_sum_wrap_exactly():
    rng = np.random.default_rng(0)
    xs = [rng.normal(size=1000) * 100 for _ in range(3)]
    total = sa.zeros(1000, 64)
    for x in xs:
        total += sa.encode(x, 32, 64, 3)
    np.testing.assert_allclose(sa.decode(total, 32, 64), sum(xs), rtol=0, atol=3 * 2.0 ** -33)
    assert np.array_equal(sa.decode(sa.encode(np.array([-1.5, 0.25]), 16, 32, 2), 16, 32), [-1.5, 0.25])


@pytest.mark.parametrize("value, message", [(np.array([np.nan]), "NaN or Inf"),
                                            (np.array([2.0 ** 30]), "exceeds the fixed-point range")])
def test_encode_refuses_what_it_cannot_represent(value, message):
    with pytest.raises(sa.SecAggError, match=message):
        sa.encode(value, 32, 64, 3)


def test_prg_is_deterministic_uniform_and_seed_dependent():
    a, b = sa.prg(b"\1" * 32, 100_000, 64), sa.prg(b"\2" * 32, 100_000, 64)
    assert np.array_equal(a, sa.prg(b"\1" * 32, 100_000, 64)) and not np.array_equal(a, b)
    top = (a >> np.uint64(63)).astype(float)  # the top bit of uniform words is a fair coin
    assert abs(top.mean() - 0.5) < 0.01


def test_shamir_any_t_shares_rebuild_the_secret_and_fewer_do_not():
    secret = bytes(range(32))
    shares = sa.shamir_split(secret, [1, 2, 3, 4, 5], 3)
    for keep in ([1, 2, 3], [2, 4, 5], [1, 3, 5, 4]):
        assert sa.shamir_combine({x: shares[x] for x in keep}, 3) == secret
    with pytest.raises(sa.SecAggError, match="2 share"):
        sa.shamir_combine({1: shares[1], 2: shares[2]}, 3)


def test_pairwise_keys_agree_and_shares_are_bound_to_their_pair():
    a, b = sa.new_private_key(), sa.new_private_key()
    k_ab = sa.agree(a, sa.public_bytes(b), "enc", "r", "site-1", "site-2")
    assert k_ab == sa.agree(b, sa.public_bytes(a), "enc", "r", "site-2", "site-1")
    assert k_ab != sa.agree(a, sa.public_bytes(b), "enc", "r2", "site-1", "site-2")
    sealed = sa.seal(k_ab, b"share", "r/site-1/site-2")
    assert sa.open_sealed(k_ab, sealed, "r/site-1/site-2") == b"share"
    with pytest.raises(sa.SecAggError, match="authentication"):
        sa.open_sealed(k_ab, sealed, "r/site-3/site-2")


def run_round(inputs, threshold, drop_before_mask=(), drop_at_unmask=(), bits=64, f=32):
    """One protocol round in memory; returns (server, unmasked sum as float, masked vectors)."""
    names = sorted(inputs)
    clients = {n: ClientParty(n) for n in names}
    server = ServerParty("job/0", names, threshold, bits)
    roster = server.collect_keys({n: clients[n].advertise("job/0", names, threshold) for n in names})
    u1 = server.route_shares({n: clients[n].share_keys("job/0", roster) for n in roster})
    masked = {}
    for n in u1:
        masked[n] = clients[n].mask("job/0", u1, sa.encode(inputs[n], f, bits, len(u1)), bits)
        if n not in drop_before_mask:
            server.add_masked(n, masked[n])
    replies = {n: clients[n].unmask("job/0", server.u2, server.inbox(n)) for n in server.check_inputs()
               if n not in drop_at_unmask}
    return server, sa.decode(server.unmask(replies), f, bits), masked


def _inputs(n_sites=3, size=2000, seed=0):
    rng = np.random.default_rng(seed)
    return {f"site-{i + 1}": rng.normal(size=size) for i in range(n_sites)}


def test_the_unmasked_sum_is_exact_and_a_masked_input_looks_uniform():
    inputs = _inputs(size=100_000)
    _, total, masked = run_round(inputs, 2)
    np.testing.assert_allclose(total, sum(inputs.values()), rtol=0, atol=2.0 ** -30)
    as_float = masked["site-1"].astype(np.float64)
    assert abs(np.corrcoef(as_float, inputs["site-1"])[0, 1]) < 0.01


def test_a_site_that_drops_after_masking_leaves_the_exact_sum_of_the_others():
    inputs = _inputs(n_sites=4)
    server, total, _ = run_round(inputs, 3, drop_before_mask=("site-2",))
    assert server.u2 == ["site-1", "site-3", "site-4"]
    expected = inputs["site-1"] + inputs["site-3"] + inputs["site-4"]
    np.testing.assert_allclose(total, expected, rtol=0, atol=2.0 ** -30)


def test_a_site_that_drops_during_unmasking_is_still_in_the_sum():
    inputs = _inputs(n_sites=3)
    _, total, _ = run_round(inputs, 2, drop_at_unmask=("site-3",))
    np.testing.assert_allclose(total, sum(inputs.values()), rtol=0, atol=2.0 ** -30)


def test_more_dropouts_than_the_threshold_allows_fail_with_a_clear_message():
    with pytest.raises(sa.SecAggError, match=r"masked inputs: 1 of 3 sites answered .*threshold is 2: too many"):
        run_round(_inputs(n_sites=3), 2, drop_before_mask=("site-2", "site-3"))
    with pytest.raises(sa.SecAggError, match=r"unmasking: 2 of 3 sites answered .*threshold is 3"):
        run_round(_inputs(n_sites=3), 3, drop_at_unmask=("site-1",))


def test_a_site_never_masks_twice_nor_reveals_both_seeds():
    names = ["site-1", "site-2"]
    clients = {n: ClientParty(n) for n in names}
    server = ServerParty("r", names, 2, 64)
    roster = server.collect_keys({n: clients[n].advertise("r", names, 2) for n in names})
    u1 = server.route_shares({n: clients[n].share_keys("r", roster) for n in names})
    clients["site-1"].mask("r", u1, sa.encode(np.ones(4), 8, 64, 2), 64)
    with pytest.raises(sa.SecAggError, match="second one"):
        clients["site-1"].mask("r", u1, sa.encode(np.zeros(4), 8, 64, 2), 64)
    with pytest.raises(sa.SecAggError, match="must include this site"):  # asked to reveal site-2's s key alone
        clients["site-1"].unmask("r", ["site-1"], server.inbox("site-1"))


def test_default_threshold_is_a_strict_majority():
    assert [default_threshold(n) for n in (2, 3, 4, 5, 10)] == [2, 2, 3, 3, 6]


@pytest.mark.parametrize("bits, f", [(32, 16), (24, 12)])
def test_narrow_words_sum_exactly_at_their_own_precision(bits, f):
    inputs = _inputs(n_sites=3, size=1000)
    server, total, masked = run_round(inputs, 2, drop_before_mask=("site-1",), bits=bits, f=f)
    assert masked["site-2"].dtype == np.uint32 and int(masked["site-2"].max()) < 2 ** bits
    np.testing.assert_allclose(total, inputs["site-2"] + inputs["site-3"], rtol=0, atol=2 * 2.0 ** -(f + 1))


def test_24_bit_words_travel_as_3_bytes():
    words = sa.encode(np.array([-1.0, 0.5, 3.25, -0.001]), 12, 24, 3)
    wire = sa.to_wire(words, 24)
    assert wire.dtype == np.uint8 and wire.size == 12
    assert np.array_equal(sa.from_wire(wire, 24), words)
    assert np.allclose(sa.decode(sa.from_wire(wire, 24), 12, 24), [-1.0, 0.5, 3.25, -0.001], atol=2.0 ** -13)
