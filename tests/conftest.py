"""Shared fixtures: every test runs with a temporary HOME and model cache, so nothing touches the real home."""

import pytest


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    home = tmp_path_factory.getbasetemp() / "home"
    home.mkdir(exist_ok=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("FLARETUNE_DATA_DIR", raising=False)
    monkeypatch.setenv("FLARETUNE_CACHE", str(tmp_path_factory.getbasetemp() / "flaretune-cache"))


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Two OpenMP threads on 2 shared, oversubscribed cores make each small op wait on a barrier
    (tests ran 3x slower); the tests check behaviour, not speed, so they run single-threaded."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class ThrowawayPKI:
    """Root CAs and site certificates shaped like FLARE's provisioning (RSA 2048, CA constraints, SAN = CN)."""

    def __init__(self):
        self._keys, self._certs = {}, {}
        for ca in ("project-ca", "other-ca"):
            key = self._key(ca)
            self._certs[ca] = self._cert(ca, key, ca, key, ca=True)

    def _key(self, name):
        from cryptography.hazmat.primitives.asymmetric import rsa

        if name not in self._keys:
            self._keys[name] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return self._keys[name]

    @staticmethod
    def _cert(cn, key, issuer, issuer_key, ca=False, days=30):
        import datetime

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes
        from cryptography.x509.oid import NameOID

        now = datetime.datetime.now(datetime.timezone.utc)
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
                   .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=days))
                   .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                                  critical=False)
                   .add_extension(x509.SubjectAlternativeName([x509.DNSName(cn)]), critical=False))
        if ca:
            builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            builder = builder.add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False),
                                            critical=True)
        return builder.sign(issuer_key, hashes.SHA256())

    def root_pem(self, ca="project-ca") -> bytes:
        from cryptography.hazmat.primitives import serialization

        return self._certs[ca].public_bytes(serialization.Encoding.PEM)

    def site(self, cn, ca="project-ca", key_of=None):
        """``(key PEM, certificate PEM)`` of a site named ``cn`` by ``ca``; ``key_of``: reuse that site's key."""
        from cryptography.hazmat.primitives import serialization

        key = self._key(f"site:{key_of or cn}")
        cert = self._cert(cn, key, ca, self._keys[ca])
        key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                    serialization.NoEncryption())
        return key_pem, cert.public_bytes(serialization.Encoding.PEM)

    def kit(self, folder, cn, ca="project-ca"):
        """A startup kit's identity files (client.key, client.crt, rootCA.pem) in ``folder``; returns it."""
        from pathlib import Path

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        key_pem, cert_pem = self.site(cn, ca)
        (folder / "client.key").write_bytes(key_pem)
        (folder / "client.crt").write_bytes(cert_pem)
        (folder / "rootCA.pem").write_bytes(self.root_pem())
        return folder


@pytest.fixture(scope="session")
def throwaway_pki():
    """Throwaway CAs and site certificates for the signed secure-aggregation keys (ops/filters tests)."""
    return ThrowawayPKI()
