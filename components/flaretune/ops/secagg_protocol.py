"""The two parties of one secure-aggregation round (Bonawitz et al., 2017, eprint 2017/281) — no FLARE.

A round has four steps; messages are plain dicts (bytes, ints, strings) that FLARE carries as task meta:

1. ``advertise``: every selected site makes two X25519 key pairs (``c`` encrypts shares, ``s`` derives the
   pairwise masks) and returns the public halves; a site with a FLARE identity also signs them, bound to
   its name, the job and the round (:mod:`flaretune.ops.secagg_identity`). The server relays the
   advertisements unchanged as the *roster*, under the FLARE names of the sites that sent them.
2. ``share_keys``: a site that holds the project's root CA first checks every advertisement of the roster
   (certificate chains to the root, common name = the relayed name, this job and round, signature) and
   refuses the round, naming the site and the reason, if one fails: it derives no key and deals nothing.
   Then it draws a self-mask seed ``b``, Shamir-splits ``b`` and its ``s`` private key t-of-n among the
   roster, and returns each share sealed (AES-GCM) for its receiver. The sites whose shares arrived are ``U1``.
3. ``mask``: a site in ``U1`` adds ``PRG(b)`` and, for each other ``v`` in ``U1``, ``± PRG(s_uv)`` to its
   encoded input. The pairwise masks cancel in any sum over all of ``U1``. The sites whose masked inputs
   arrived are ``U2``; the server needs at least ``threshold`` of them.
4. ``unmask``: each site in ``U2`` opens the shares addressed to it and reveals, for every sender, the
   share of ``b`` if the sender is in ``U2`` and the share of ``s`` if it dropped — never both for one
   site. With ``threshold`` answers the server rebuilds the seeds and removes every remaining mask.

The server learns the sum over ``U2`` and nothing else about an input while at most ``threshold - 1``
sites collude with it and it follows the protocol (the semi-honest model of the paper). With signed keys
(every site has a :class:`~flaretune.ops.secagg_identity.SiteIdentity` and a
:class:`~flaretune.ops.secagg_identity.TrustRoot`), a server that lies about the relayed keys — its own in
place of a site's, a site's under another name, keys from another round — is caught before any key is
derived. Unsigned (no trust root: the FLARE simulator has no certificates), the sites take the relayed
keys on trust. A site refuses to mask twice or to answer ``unmask`` twice in one round, so the server
cannot ask for both seeds of a site; the paper's consistency-check round against a server that tells sites
different survivor sets is not done.
"""

import json
import secrets
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np

from flaretune.ops import secagg as sa
from flaretune.ops.secagg import SecAggError
from flaretune.ops.secagg_identity import KEY_FIELDS, SiteIdentity, TrustRoot


def default_threshold(n_sites: int) -> int:
    """A strict majority, ``n // 2 + 1`` (at least 2): survives ``n - t`` dropouts."""
    return max(2, n_sites // 2 + 1)


def check_threshold(threshold: int, n_sites: int) -> None:
    if isinstance(threshold, bool) or not isinstance(threshold, int) or not 2 <= threshold <= n_sites:
        raise SecAggError(f"threshold must be an int in [2, {n_sites}] for {n_sites} sites, got {threshold!r}"
                          + (" (secure aggregation needs at least 2 sites)" if n_sites < 2 else ""))


@dataclass
class _ClientRound:
    sites: List[str]
    threshold: int
    c_key: object
    s_key: object
    roster: Dict[str, Dict[str, bytes]] = field(default_factory=dict)
    self_seed: Optional[bytes] = None
    u1: Optional[List[str]] = None  # set once the site has masked


def _x(sites: Sequence[str], site: str) -> int:
    return sorted(sites).index(site) + 1  # a site's Shamir point: its 1-based rank among the round's sites


class ClientParty:
    """One site's side. Its secrets stay in this object and are dropped when the round is unmasked.

    Args:
        name: the site's FLARE name.
        job_id: the job the rounds belong to (signed advertisements are bound to it).
        identity: sign this site's advertisements with it; None: they go unsigned.
        trust: check every advertisement of a roster against it before deriving keys; None: take them on trust.
    """

    def __init__(self, name: str, job_id: str = "", identity: Optional[SiteIdentity] = None,
                 trust: Optional[TrustRoot] = None):
        self.name = name
        self.job_id = job_id
        self.identity = identity
        self.trust = trust
        self._rounds: Dict[str, _ClientRound] = {}

    def _round(self, round_id: str, step: str) -> _ClientRound:
        if round_id not in self._rounds:
            raise SecAggError(f"{self.name}: secure-aggregation round {round_id!r} is unknown here ({step} needs "
                              f"the earlier steps of the same round)")
        return self._rounds[round_id]

    def advertise(self, round_id: str, sites: Sequence[str], threshold: int) -> Dict[str, bytes]:
        if self.name not in sites:
            raise SecAggError(f"{self.name} is not among the round's sites {sorted(sites)}")
        check_threshold(threshold, len(sites))
        state = self._rounds.get(round_id)
        if state is None:
            state = _ClientRound(sorted(sites), threshold, sa.new_private_key(), sa.new_private_key())
            self._rounds[round_id] = state
        advert = {"c_pk": sa.public_bytes(state.c_key), "s_pk": sa.public_bytes(state.s_key)}
        if self.identity is not None:
            advert.update(self.identity.sign(self.job_id, round_id, advert))
        return advert

    def share_keys(self, round_id: str, roster: Mapping[str, Mapping[str, bytes]]) -> Dict[str, bytes]:
        state = self._round(round_id, "share_keys")
        mine = roster.get(self.name)
        own = {"c_pk": sa.public_bytes(state.c_key), "s_pk": sa.public_bytes(state.s_key)}
        if not mine or any(bytes(mine.get(k, b"")) != v for k, v in own.items()):
            raise SecAggError(f"{self.name}: the relayed roster does not carry this site's own public keys")
        if not set(roster) <= set(state.sites) or len(roster) < state.threshold:
            raise SecAggError(f"{self.name}: the roster {sorted(roster)} must be at least {state.threshold} of the "
                              f"round's sites {state.sites}")
        if state.self_seed is not None:
            raise SecAggError(f"{self.name}: shares of round {round_id!r} were already dealt")
        for site in sorted(roster) if self.trust is not None else ():
            reason = self.trust.check(site, roster[site], self.job_id, round_id)
            if reason:
                raise SecAggError(f"{self.name}: refusing the secure-aggregation keys of {site}: {reason}; "
                                  f"nothing is masked or sent in round {round_id!r}")
        state.roster = {site: {k: bytes(keys[k]) for k in KEY_FIELDS} for site, keys in roster.items()}
        state.self_seed = secrets.token_bytes(sa.SEED_BYTES)
        xs = [_x(state.sites, site) for site in sorted(roster)]
        b_shares = sa.shamir_split(state.self_seed, xs, state.threshold)
        s_shares = sa.shamir_split(sa.private_bytes(state.s_key), xs, state.threshold)
        sealed = {}
        for peer in sorted(roster):
            x = _x(state.sites, peer)
            key = sa.agree(state.c_key, state.roster[peer]["c_pk"], "enc", round_id, self.name, peer)
            body = json.dumps({"from": self.name, "to": peer, "x": x, "b": hex(b_shares[x]), "s": hex(s_shares[x])})
            sealed[peer] = sa.seal(key, body.encode(), f"{round_id}/{self.name}/{peer}")
        return sealed

    def mask(self, round_id: str, u1: Sequence[str], encoded: np.ndarray, modulus_bits: int) -> np.ndarray:
        state = self._round(round_id, "mask")
        if state.self_seed is None:
            raise SecAggError(f"{self.name}: round {round_id!r} has no dealt shares yet")
        if state.u1 is not None:
            raise SecAggError(f"{self.name}: already masked an input in round {round_id!r}; refusing a second one")
        if self.name not in u1 or not set(u1) <= set(state.roster) or len(u1) < state.threshold:
            raise SecAggError(f"{self.name}: U1 {sorted(u1)} must include this site, lie in the roster and "
                              f"have at least {state.threshold} sites")
        state.u1 = sorted(u1)
        n = len(encoded)
        masks = [(sa.prg(state.self_seed, n, modulus_bits), 1)]
        for peer in state.u1:
            if peer != self.name:
                seed = sa.agree(state.s_key, state.roster[peer]["s_pk"], "mask", round_id, self.name, peer)
                masks.append((sa.prg(seed, n, modulus_bits), sa.pair_sign(self.name, peer)))
        return sa.add_masks(encoded, masks, modulus_bits)

    def unmask(self, round_id: str, u2: Sequence[str], sealed_for_me: Mapping[str, bytes]) -> Dict[str, dict]:
        state = self._round(round_id, "unmask")
        if state.u1 is None:
            raise SecAggError(f"{self.name}: sent no masked input in round {round_id!r}, so it does not unmask")
        u2 = sorted(u2)
        if self.name not in u2 or not set(u2) <= set(state.u1) or len(u2) < state.threshold:
            raise SecAggError(f"{self.name}: U2 {u2} must include this site, lie in U1 {state.u1} and have at "
                              f"least {state.threshold} sites; refusing to reveal shares")
        revealed = {}
        for sender in state.u1:
            if sender not in sealed_for_me:
                raise SecAggError(f"{self.name}: no share from {sender} was relayed for round {round_id!r}")
            key = sa.agree(state.c_key, state.roster[sender]["c_pk"], "enc", round_id, self.name, sender)
            body = json.loads(sa.open_sealed(key, bytes(sealed_for_me[sender]), f"{round_id}/{sender}/{self.name}"))
            if body["from"] != sender or body["to"] != self.name:
                raise SecAggError(f"{self.name}: a share claims to be from {body['from']} to {body['to']}")
            kind = "b" if sender in u2 else "s"
            revealed[sender] = {"kind": kind, "x": body["x"], "y": body[kind]}
        del self._rounds[round_id]  # the secrets of a finished round go
        return revealed


class ServerParty:
    """The server's side of one round: relay keys and shares, add masked inputs, remove the masks."""

    def __init__(self, round_id: str, sites: Sequence[str], threshold: int, modulus_bits: int):
        check_threshold(threshold, len(sites))
        self.round_id, self.sites, self.threshold, self.modulus_bits = round_id, sorted(sites), threshold, modulus_bits
        self.roster: Dict[str, Dict[str, bytes]] = {}
        self.u1: List[str] = []
        self._inbox: Dict[str, Dict[str, bytes]] = {}
        self._masked: Dict[str, np.ndarray] = {}

    def _need(self, have: Sequence[str], step: str, of: Sequence[str]) -> None:
        if len(have) < self.threshold:
            lost = sorted(set(of) - set(have))
            raise SecAggError(f"secure aggregation {step}: {len(have)} of {len(of)} sites answered "
                              f"({', '.join(sorted(have)) or 'none'}; dropped: {', '.join(lost)}), the threshold is "
                              f"{self.threshold}: too many dropouts, the round fails")

    def collect_keys(self, replies: Mapping[str, Mapping[str, bytes]]) -> Dict[str, Dict[str, bytes]]:
        """The roster: each round site's advertisement as it sent it (signature and certificate included)."""
        self.roster = {site: {**r, "c_pk": bytes(r["c_pk"]), "s_pk": bytes(r["s_pk"])}
                       for site, r in sorted(replies.items()) if site in self.sites}
        self._need(list(self.roster), "key advertisement", self.sites)
        return self.roster

    def route_shares(self, replies: Mapping[str, Mapping[str, bytes]]) -> List[str]:
        """U1: the roster sites that sent a sealed share for every roster site."""
        self.u1 = sorted(site for site, sealed in replies.items()
                         if site in self.roster and set(sealed) >= set(self.roster))
        self._need(self.u1, "key sharing", list(self.roster))
        self._inbox = {receiver: {sender: bytes(replies[sender][receiver]) for sender in self.u1}
                       for receiver in self.u1}
        return self.u1

    def inbox(self, receiver: str) -> Dict[str, bytes]:
        return dict(self._inbox[receiver])

    def add_masked(self, site: str, vector: np.ndarray) -> None:
        if site not in self.u1:
            raise SecAggError(f"a masked input from {site}, which is not in U1 {self.u1}")
        self._masked[site] = np.asarray(vector)

    @property
    def u2(self) -> List[str]:
        return sorted(self._masked)

    def check_inputs(self) -> List[str]:
        self._need(self.u2, "masked inputs", self.u1)
        lengths = {len(v) for v in self._masked.values()}
        if len(lengths) != 1:
            raise SecAggError(f"masked inputs of different lengths {sorted(lengths)}")
        return self.u2

    def unmask(self, replies: Mapping[str, Mapping[str, dict]]) -> np.ndarray:
        """The sum over U2 of the sites' encoded inputs, every mask removed."""
        u2 = self.check_inputs()
        answered = sorted(site for site in replies if site in u2)
        self._need(answered, "unmasking", u2)
        n = len(next(iter(self._masked.values())))
        total = sa.zeros(n, self.modulus_bits)
        for vector in self._masked.values():
            total += vector
        for owner in self.u1:
            kind = "b" if owner in u2 else "s"
            shares = {}
            for site in answered:
                share = replies[site].get(owner)
                if share is None or share.get("kind") != kind:
                    raise SecAggError(f"{site} did not reveal its {kind!r} share of {owner}")
                shares[int(share["x"])] = int(share["y"], 16)
            secret = sa.shamir_combine(shares, self.threshold)
            if kind == "b":  # the self-mask of a site whose input is in the sum
                total -= sa.prg(secret, n, self.modulus_bits)
                continue
            s_key = sa.private_key_from(secret)  # a dropped site: cancel the pairwise masks it left in U2's inputs
            for site in u2:
                seed = sa.agree(s_key, self.roster[site]["s_pk"], "mask", self.round_id, owner, site)
                mask = sa.prg(seed, n, self.modulus_bits)
                if sa.pair_sign(site, owner) > 0:
                    total -= mask
                else:
                    total += mask
        return sa.reduce(total, self.modulus_bits)
