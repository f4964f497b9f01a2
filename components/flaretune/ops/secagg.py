"""Secure aggregation primitives: fixed-point encoding mod 2^k, PRG masks, X25519, Shamir — no FLARE.

The building blocks of pairwise additive masking (Bonawitz et al., 2017, "Practical Secure Aggregation
for Privacy-Preserving Machine Learning", CCS, eprint 2017/281); :mod:`flaretune.ops.secagg_protocol`
assembles them into the parties of one round.

* Fixed point: a float64 vector becomes integers ``round(x * 2^f)`` in Z_{2^k} (two's complement), so
  sums wrap exactly and masks cancel exactly. A value whose magnitude could overflow the sum of ``n``
  sites is refused, never saturated: :func:`encode` raises with the bound it needed.
* Masks: a 32-byte seed expands to a vector in Z_{2^k} with AES-256-CTR (a PRG under the standard AES
  assumption); the keystream's bytes are the vector's little-endian words.
* Key agreement: X25519; the shared secret goes through HKDF-SHA256 with a label that names the round
  and both sites, so a key is bound to one pair of site names in one round.
* Share transport: AES-256-GCM with associated data naming sender, receiver and round.
* Shamir t-of-n over the Mersenne prime 2^521 - 1 (larger than every 32-byte secret): any ``t`` shares
  give the secret, fewer give no information about it.
"""

import os
import secrets
from typing import Dict, List, Sequence, Tuple

import numpy as np
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from flaretune.errors import FlaretuneError

PRIME = (1 << 521) - 1  # Mersenne prime M521: the Shamir field
SEED_BYTES = 32
MODULUS_BITS = (24, 32, 64)  # 24-bit words are held in uint32 and travel as 3 bytes (to_wire)
_DTYPES = {24: np.uint32, 32: np.uint32, 64: np.uint64}


class SecAggError(FlaretuneError, ValueError):
    """A protocol step cannot go on (too few sites, an inconsistent message); the text says why."""


# ---- fixed point in Z_{2^k} ----------------------------------------------------------------------------
def check_encoding(fraction_bits, modulus_bits) -> None:
    if modulus_bits not in MODULUS_BITS:
        raise SecAggError(f"modulus_bits must be one of {MODULUS_BITS}, got {modulus_bits!r}")
    if (isinstance(fraction_bits, bool) or not isinstance(fraction_bits, int)
            or not 0 <= fraction_bits < modulus_bits - 8):
        raise SecAggError(f"fraction_bits must be an int in [0, {modulus_bits - 8}), got {fraction_bits!r}")


def value_bound(fraction_bits: int, modulus_bits: int, n_sites: int) -> float:
    """Largest |x| one of ``n_sites`` sites may encode so that no sum of them can wrap around."""
    return float(2 ** (modulus_bits - 1 - fraction_bits)) / max(1, n_sites) - 1.0


def encode(values: np.ndarray, fraction_bits: int, modulus_bits: int, n_sites: int) -> np.ndarray:
    """``round(values * 2^f) mod 2^k`` as uint32/uint64; ValueError if a value is non-finite or too large."""
    check_encoding(fraction_bits, modulus_bits)
    x = np.asarray(values, dtype=np.float64)
    if not np.isfinite(x).all():
        raise SecAggError(f"{int(x.size - np.isfinite(x).sum())} value(s) are NaN or Inf: they cannot be encoded")
    bound = value_bound(fraction_bits, modulus_bits, n_sites)
    peak = float(np.abs(x).max()) if x.size else 0.0
    if peak > bound:
        raise SecAggError(f"a value of magnitude {peak:.6g} exceeds the fixed-point range {bound:.6g} of "
                          f"{modulus_bits}-bit sums over {n_sites} sites with {fraction_bits} fraction bits; "
                          f"use fewer fraction_bits or modulus_bits 64 (values are never clipped)")
    scaled = np.rint(x * float(2 ** fraction_bits)).astype(np.int64)
    return reduce(scaled.view(np.uint64), modulus_bits)


def reduce(words: np.ndarray, modulus_bits: int) -> np.ndarray:
    """``words mod 2^k`` in the word type of ``k`` (a uint32 sum wraps mod 2^32, a multiple of 2^24)."""
    words = np.asarray(words)
    if modulus_bits < 64:
        words = words.astype(np.uint64) & np.uint64((1 << modulus_bits) - 1)
    return words.astype(_DTYPES[modulus_bits])


def decode(encoded: np.ndarray, fraction_bits: int, modulus_bits: int) -> np.ndarray:
    """The float64 values of a (summed) encoded vector: two's complement mod 2^k, divided by 2^f."""
    check_encoding(fraction_bits, modulus_bits)
    signed = reduce(encoded, modulus_bits).astype(np.uint64).view(np.int64)
    if modulus_bits < 64:
        signed = np.where(signed >= 1 << (modulus_bits - 1), signed - (1 << modulus_bits), signed)
    return signed.astype(np.float64) / float(2 ** fraction_bits)


def to_wire(words: np.ndarray, modulus_bits: int) -> np.ndarray:
    """The words as sent: 24-bit words as 3 little-endian bytes each (uint8), others unchanged."""
    if modulus_bits != 24:
        return words
    return np.ascontiguousarray(reduce(words, 24).astype("<u4")).view(np.uint8).reshape(-1, 4)[:, :3].ravel()


def from_wire(data: np.ndarray, modulus_bits: int) -> np.ndarray:
    """Inverse of :func:`to_wire`."""
    if modulus_bits != 24:
        return np.asarray(data, dtype=_DTYPES[modulus_bits])
    raw = np.asarray(data, dtype=np.uint8).reshape(-1, 3)
    padded = np.zeros((len(raw), 4), dtype=np.uint8)
    padded[:, :3] = raw
    return padded.view("<u4").ravel().astype(np.uint32)


def zeros(n: int, modulus_bits: int) -> np.ndarray:
    return np.zeros(n, dtype=_DTYPES[modulus_bits])


# ---- masks ----------------------------------------------------------------------------------------
def prg(seed: bytes, n: int, modulus_bits: int) -> np.ndarray:
    """``n`` uniform words of Z_{2^k} from a 32-byte seed (AES-256-CTR keystream, nonce 0)."""
    if len(seed) != SEED_BYTES:
        raise SecAggError(f"a mask seed must be {SEED_BYTES} bytes, got {len(seed)}")
    dtype = np.dtype(_DTYPES[modulus_bits]).newbyteorder("<")
    encryptor = Cipher(algorithms.AES(seed), modes.CTR(b"\0" * 16)).encryptor()
    stream = encryptor.update(b"\0" * (n * dtype.itemsize)) + encryptor.finalize()
    return reduce(np.frombuffer(stream, dtype=dtype), modulus_bits)


def add_masks(vector: np.ndarray, masks: Sequence[Tuple[np.ndarray, int]], modulus_bits: int) -> np.ndarray:
    """``vector + sum(sign * mask)`` in Z_{2^k} (numpy unsigned arithmetic wraps exactly)."""
    out = np.array(vector, copy=True)
    for mask, sign in masks:
        if sign > 0:
            out += mask
        else:
            out -= mask
    return reduce(out, modulus_bits)


def pair_sign(me: str, peer: str) -> int:
    """+1 for the site whose name sorts first in a pair, -1 for the other: their masks cancel."""
    return 1 if me < peer else -1


# ---- X25519 key agreement and share transport ------------------------------------------------------
def new_private_key() -> X25519PrivateKey:
    return X25519PrivateKey.generate()


def public_bytes(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def private_bytes(key: X25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                             serialization.NoEncryption())


def private_key_from(raw: bytes) -> X25519PrivateKey:
    return X25519PrivateKey.from_private_bytes(raw)


def agree(private_key: X25519PrivateKey, peer_public: bytes, purpose: str, round_id: str, a: str, b: str) -> bytes:
    """A 32-byte key shared by sites ``a`` and ``b`` for ``purpose`` in ``round_id`` (X25519 + HKDF-SHA256)."""
    if not isinstance(peer_public, bytes) or len(peer_public) != 32:
        raise SecAggError(f"a public key must be 32 raw bytes, got {type(peer_public).__name__}")
    secret = private_key.exchange(X25519PublicKey.from_public_bytes(peer_public))
    first, second = sorted((a, b))
    info = f"flaretune-secagg/{purpose}/{round_id}/{first}/{second}".encode()
    return HKDF(algorithm=hashes.SHA256(), length=SEED_BYTES, salt=None, info=info).derive(secret)


def seal(key: bytes, plaintext: bytes, associated: str) -> bytes:
    nonce = os.urandom(12)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, associated.encode())


def open_sealed(key: bytes, sealed: bytes, associated: str) -> bytes:
    from cryptography.exceptions import InvalidTag

    try:
        return AESGCM(key).decrypt(sealed[:12], sealed[12:], associated.encode())
    except (InvalidTag, ValueError, TypeError):
        raise SecAggError(f"a share failed authentication ({associated}): altered or not meant for this site") from None


# ---- Shamir t-of-n over GF(2^521 - 1) --------------------------------------------------------------
def shamir_split(secret: bytes, xs: Sequence[int], threshold: int) -> Dict[int, int]:
    """Shares ``{x: f(x)}`` of a random polynomial of degree ``threshold - 1`` with ``f(0) = secret``."""
    if not 1 <= threshold <= len(xs):
        raise SecAggError(f"threshold must be in [1, {len(xs)}], got {threshold}")
    if len(set(xs)) != len(xs) or any(not 0 < x < PRIME for x in xs):
        raise SecAggError("share points must be distinct and non-zero")
    coefficients = [int.from_bytes(secret, "big")] + [secrets.randbelow(PRIME) for _ in range(threshold - 1)]
    shares = {}
    for x in xs:
        y = 0
        for c in reversed(coefficients):  # Horner
            y = (y * x + c) % PRIME
        shares[x] = y
    return shares


def shamir_combine(shares: Dict[int, int], threshold: int, length: int = SEED_BYTES) -> bytes:
    """The secret from at least ``threshold`` shares (Lagrange interpolation at 0)."""
    if len(shares) < threshold:
        raise SecAggError(f"{len(shares)} share(s) given, {threshold} needed")
    points = sorted(shares.items())[:threshold]
    secret = 0
    for i, (xi, yi) in enumerate(points):
        numerator, denominator = 1, 1
        for j, (xj, _) in enumerate(points):
            if i != j:
                numerator = numerator * (-xj) % PRIME
                denominator = denominator * (xi - xj) % PRIME
        secret = (secret + yi * numerator * pow(denominator, -1, PRIME)) % PRIME
    if secret >= 1 << (8 * length):
        raise SecAggError("the shares do not reconstruct a valid secret (inconsistent shares)")
    return secret.to_bytes(length, "big")


# ---- tensors <-> one vector ------------------------------------------------------------------------
def flatten(params: Dict[str, np.ndarray]) -> Tuple[np.ndarray, List[Tuple[str, List[int]]]]:
    """One float64 vector of every tensor in sorted-name order, and the layout ``[(name, shape)]``."""
    layout = [(name, list(np.shape(params[name]))) for name in sorted(params)]
    parts = [np.asarray(params[name], dtype=np.float64).ravel() for name, _ in layout]
    return (np.concatenate(parts) if parts else np.zeros(0)), layout


def unflatten(vector: np.ndarray, layout: Sequence[Tuple[str, Sequence[int]]]) -> Dict[str, np.ndarray]:
    out, offset = {}, 0
    for name, shape in layout:
        size = int(np.prod(shape)) if len(shape) else 1
        out[name] = np.asarray(vector[offset:offset + size]).reshape(shape)
        offset += size
    if offset != len(vector):
        raise SecAggError(f"the layout covers {offset} values, the vector has {len(vector)}")
    return out
