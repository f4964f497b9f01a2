"""Secure aggregation's key advertisements, signed with each site's FLARE identity and checked by peers — no FLARE.

The server relays every site's X25519 public keys. A server that lies could hand each site keys of its own
and sit in the middle of every pair. The version of Bonawitz et al. (2017, eprint 2017/281) that is secure
against an active server closes that with a PKI: each site signs ``c_pk ‖ s_pk`` when it advertises them
and every site checks each peer's signature before it derives a pairwise key. FLARE provisioning already
gives every site that PKI: its startup kit holds ``client.key``, ``client.crt`` (common name = the site's
name, signed by the project's root CA) and ``rootCA.pem``.

* Signing (:class:`SiteIdentity`): the advertisement adds ``job``, ``round``, the PEM certificate and an
  RSA-PSS / SHA-256 signature (the scheme of FLARE's ``nvflare.lighter.utils.sign_content``) over
  :func:`signed_content`: the site's name, the job id, the round id and both public keys.
* Checking (:class:`TrustRoot.check`), for each site of the relayed roster: the certificate is valid now
  and chains to this site's own root CA (the path check of FLARE's ``verify_cert_chain``); its common name
  is the name the server relays the keys under; the advertisement names this job and this round (a
  replay from another round or job is refused); the signature covers exactly the relayed keys.

Not done: that version's consistency-check round (the sites sign the set of survivors before they reveal
shares), so a server that tells sites different survivor sets is still outside the model.
"""

import datetime
import json
from pathlib import Path
from typing import Dict, Mapping, Optional

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID
from cryptography.x509.verification import ExtensionPolicy, PolicyBuilder, Store, VerificationError

from flaretune.ops.secagg import SecAggError

KEY_FIELDS = ("c_pk", "s_pk")  # the public keys a site advertises (ops.secagg_protocol)
SIGNED_FIELDS = ("job", "round", "cert", "sig")  # what signing adds to an advertisement
_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.MAX_LENGTH)


def signed_content(site: str, job_id: str, round_id: str, public_keys: Mapping[str, bytes]) -> bytes:
    """The bytes a site signs: its name, the job, the round and both public keys (canonical JSON)."""
    body = {"scheme": "flaretune-secagg-keys/1", "site": site, "job": job_id, "round": round_id,
            **{k: bytes(public_keys[k]).hex() for k in KEY_FIELDS}}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def common_name(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else ""


def _issuer_name(cert: x509.Certificate) -> str:
    names = cert.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else cert.issuer.rfc4514_string()


class SiteIdentity:
    """A site's signing key and certificate (its startup kit's ``client.key`` and ``client.crt``)."""

    def __init__(self, name: str, key_pem: bytes, cert_pem: bytes, source: str = "the certificate"):
        self.name = name
        self.cert_pem = bytes(cert_pem)
        try:
            cert = x509.load_pem_x509_certificate(self.cert_pem)
            self._key = serialization.load_pem_private_key(bytes(key_pem), password=None)
        except (ValueError, TypeError) as err:
            raise SecAggError(f"{name}: cannot load its FLARE identity from {source}: {err}") from None
        if not isinstance(self._key, rsa.RSAPrivateKey):
            raise SecAggError(f"{name}: its FLARE key is {type(self._key).__name__}, not RSA (FLARE signs with RSA)")
        if common_name(cert) != name:
            raise SecAggError(f"{name}: {source} is issued to {common_name(cert)!r}, not to this site {name!r}")
        if cert.public_key().public_numbers() != self._key.public_key().public_numbers():
            raise SecAggError(f"{name}: {source} does not belong to its private key")

    @classmethod
    def from_files(cls, name: str, key_file, cert_file) -> "SiteIdentity":
        return cls(name, Path(key_file).read_bytes(), Path(cert_file).read_bytes(), source=str(cert_file))

    def sign(self, job_id: str, round_id: str, public_keys: Mapping[str, bytes]) -> Dict[str, object]:
        """The fields to add to this site's advertisement of ``public_keys`` for ``round_id`` of ``job_id``."""
        signature = self._key.sign(signed_content(self.name, job_id, round_id, public_keys), _PSS, hashes.SHA256())
        return {"job": job_id, "round": round_id, "cert": self.cert_pem, "sig": signature}


class TrustRoot:
    """The project's root CA as this site holds it (its startup kit's ``rootCA.pem``): checks peers' keys."""

    def __init__(self, root_pem: bytes, source: str = "rootCA.pem"):
        try:
            self.root = x509.load_pem_x509_certificate(bytes(root_pem))
        except ValueError as err:
            raise SecAggError(f"cannot load the root CA {source}: {err}") from None
        self.source = source

    @classmethod
    def from_file(cls, path) -> "TrustRoot":
        return cls(Path(path).read_bytes(), source=str(path))

    def check(self, site: str, advert: Mapping[str, object], job_id: str, round_id: str,
              now: Optional[datetime.datetime] = None) -> Optional[str]:
        """Why ``advert``, relayed as ``site``'s keys for ``round_id`` of ``job_id``, is not trusted; None if it is."""
        if any(advert.get(k) is None for k in SIGNED_FIELDS):
            return "its keys are not signed (this site requires signed keys)"
        try:
            cert = x509.load_pem_x509_certificate(bytes(advert["cert"]))
        except (ValueError, TypeError):
            return "its certificate is not a PEM X.509 certificate"
        now = now or datetime.datetime.now(datetime.timezone.utc)
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            return (f"its certificate is valid from {cert.not_valid_before_utc:%Y-%m-%d %H:%M} to "
                    f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC, not now")
        verifier = (PolicyBuilder().store(Store([self.root])).time(now)
                    .extension_policies(ca_policy=ExtensionPolicy.webpki_defaults_ca(),
                                        ee_policy=ExtensionPolicy.permit_all())
                    .build_client_verifier())
        try:
            verifier.verify(cert, [])
        except VerificationError:
            return (f"its certificate, issued by {_issuer_name(cert)!r}, does not chain to this site's root CA "
                    f"{common_name(self.root)!r}")
        if common_name(cert) != site:
            return f"its certificate is issued to {common_name(cert)!r}, not to {site!r}"
        if (advert["job"], advert["round"]) != (job_id, round_id):
            return (f"it was signed for round {advert['round']!r} of job {advert['job']!r}, not for round "
                    f"{round_id!r} of job {job_id!r} (a replayed advertisement)")
        key = cert.public_key()
        if not isinstance(key, rsa.RSAPublicKey):
            return f"its certificate holds a {type(key).__name__}, not an RSA key"
        try:
            key.verify(bytes(advert["sig"]), signed_content(site, job_id, round_id, advert), _PSS, hashes.SHA256())
        except (InvalidSignature, KeyError, TypeError, ValueError):
            return "its signature does not match the relayed public keys (altered after signing)"
        return None
