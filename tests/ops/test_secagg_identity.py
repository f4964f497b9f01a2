"""Signed key advertisements without FLARE: a throwaway CA, whole rounds, and every lie of the relay refused."""

import datetime

import numpy as np
import pytest

from flaretune.ops import secagg as sa
from flaretune.ops.secagg_identity import SiteIdentity, TrustRoot
from flaretune.ops.secagg_protocol import ClientParty, ServerParty

SITES = ["site-1", "site-2", "site-3"]
JOB = "job-1"


def signed_parties(pki):
    trust = TrustRoot(pki.root_pem(), source="rootCA.pem")
    return {s: ClientParty(s, JOB, SiteIdentity(s, *pki.site(s)), trust) for s in SITES}


def test_signed_keys_pass_the_relay_unchanged_and_the_round_unmasks_exactly(throwaway_pki):
    parties = signed_parties(throwaway_pki)
    server = ServerParty("r1", SITES, 2, 64)
    adverts = {s: p.advertise("r1", SITES, 2) for s, p in parties.items()}
    assert all(a["job"] == JOB and a["round"] == "r1" and len(a["sig"]) == 256 for a in adverts.values())
    roster = server.collect_keys(adverts)
    assert roster == adverts  # relayed as sent: certificate and signature included
    u1 = server.route_shares({s: p.share_keys("r1", roster) for s, p in parties.items()})
    inputs = {s: np.full(5, float(i + 1)) for i, s in enumerate(SITES)}
    for s in u1:
        server.add_masked(s, parties[s].mask("r1", u1, sa.encode(inputs[s], 16, 64, 3), 64))
    replies = {s: parties[s].unmask("r1", server.u2, server.inbox(s)) for s in SITES}
    assert np.array_equal(sa.decode(server.unmask(replies), 16, 64), np.full(5, 6.0))


def _other_ca(pki, adverts, stale):
    keys = {k: adverts["site-2"][k] for k in ("c_pk", "s_pk")}
    return {**keys, **SiteIdentity("site-2", *pki.site("site-2", ca="other-ca")).sign(JOB, "r2", keys)}


LIES = {  # what the server relays to site-1 as site-2's advertisement, and site-1's one line about it
    "re-signed by another CA": (_other_ca, "its certificate, issued by 'other-ca', does not chain to this site's "
                                           "root CA 'project-ca'"),
    "another site's under its name": (lambda pki, adverts, stale: adverts["site-3"],
                                      "its certificate is issued to 'site-3', not to 'site-2'"),
    "a key swapped": (lambda pki, adverts, stale: {**adverts["site-2"], "s_pk": sa.public_bytes(sa.new_private_key())},
                      "its signature does not match the relayed public keys (altered after signing)"),
    "replayed from the round before": (lambda pki, adverts, stale: stale,
                                       "it was signed for round 'r1' of job 'job-1', not for round 'r2' of job "
                                       "'job-1' (a replayed advertisement)"),
    "unsigned": (lambda pki, adverts, stale: {k: adverts["site-2"][k] for k in ("c_pk", "s_pk")},
                 "its keys are not signed (this site requires signed keys)"),
}


@pytest.mark.parametrize("lie", list(LIES))
def test_a_lying_relay_is_refused_with_one_line_and_nothing_is_dealt_or_masked(throwaway_pki, lie):
    forge, reason = LIES[lie]
    parties = signed_parties(throwaway_pki)
    stale = parties["site-2"].advertise("r1", SITES, 2)
    adverts = {s: p.advertise("r2", SITES, 2) for s, p in parties.items()}
    roster = {**adverts, "site-2": forge(throwaway_pki, adverts, stale)}
    with pytest.raises(sa.SecAggError) as refused:
        parties["site-1"].share_keys("r2", roster)
    assert str(refused.value) == (f"site-1: refusing the secure-aggregation keys of site-2: {reason}; nothing is "
                                  f"masked or sent in round 'r2'")
    with pytest.raises(sa.SecAggError, match="has no dealt shares yet"):
        parties["site-1"].mask("r2", SITES, sa.encode(np.ones(3), 8, 64, 3), 64)
    assert parties["site-1"].share_keys("r2", adverts)  # the honest roster still goes through


def test_an_expired_certificate_is_refused(throwaway_pki):
    parties = signed_parties(throwaway_pki)
    advert = parties["site-2"].advertise("r1", SITES, 2)
    later = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=60)
    reason = parties["site-1"].trust.check("site-2", advert, JOB, "r1", now=later)
    assert reason.startswith("its certificate is valid from ") and reason.endswith(" UTC, not now")


@pytest.mark.parametrize("key_of, cert_of, message", [
    ("site-1", "site-2", "site-1: the certificate is issued to 'site-2', not to this site 'site-1'"),
    ("site-3", "site-1", "site-1: the certificate does not belong to its private key"),
])
def test_a_site_refuses_to_sign_with_an_identity_that_is_not_its_own(throwaway_pki, key_of, cert_of, message):
    with pytest.raises(sa.SecAggError) as refused:
        SiteIdentity("site-1", throwaway_pki.site(key_of)[0], throwaway_pki.site(cert_of)[1])
    assert str(refused.value) == message
