"""The RFC 6962 / 9162 Merkle tree: published vectors, an independent naive implementation, property
tests at random sizes, and the proof-mutation suite (every corrupted proof is rejected)."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trimtab.audit.domain import chain, merkle
from trimtab.audit.domain.merkle import ProofError, Tree

# The Certificate Transparency reference leaves (RFC 6962 test data used by Google's CT code and
# transparency-dev/merkle), the root for each size 1..8, and the published proofs.
CT_DATA = [bytes.fromhex(h) for h in [
    "", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"]]
CT_ROOTS = [bytes.fromhex(h) for h in [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]]
EMPTY = bytes.fromhex("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
H = bytes.fromhex
CT_INCLUSION = [  # (leaf index, tree size, path)
    (0, 8, [H("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
            H("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            H("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4")]),
    (5, 8, [H("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
            H("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
            H("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7")]),
    (2, 3, [H("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125")]),
    (1, 5, [H("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
            H("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            H("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b")]),
]
CT_CONSISTENCY = [  # (first, second, proof)
    (1, 1, []),
    (1, 8, [H("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
            H("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            H("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4")]),
    (6, 8, [H("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
            H("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
            H("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7")]),
    (2, 5, [H("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            H("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b")]),
]
CT_LEAVES = [merkle.leaf_hash(d) for d in CT_DATA]
SOME = H("abacaba000000000000000000000000000000000000000000060061e00123456")


# ---------------------------------------------------------------------- an independent reference
# Straight from the RFC 6962 section 2.1 definitions, recursively, over the raw data: no shared code.

def _k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_mth(d: list[bytes]) -> bytes:
    if not d:
        return hashlib.sha256(b"").digest()
    if len(d) == 1:
        return hashlib.sha256(b"\x00" + d[0]).digest()
    k = _k(len(d))
    return hashlib.sha256(b"\x01" + ref_mth(d[:k]) + ref_mth(d[k:])).digest()


def ref_path(m: int, d: list[bytes]) -> list[bytes]:
    if len(d) == 1:
        return []
    k = _k(len(d))
    if m < k:
        return ref_path(m, d[:k]) + [ref_mth(d[k:])]
    return ref_path(m - k, d[k:]) + [ref_mth(d[:k])]


def ref_subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    if m == len(d):
        return [] if b else [ref_mth(d)]
    k = _k(len(d))
    if m <= k:
        return ref_subproof(m, d[:k], b) + [ref_mth(d[k:])]
    return ref_subproof(m - k, d[k:], False) + [ref_mth(d[:k])]


def data(n: int) -> list[bytes]:
    return [f"leaf {i}".encode() * (i % 3 + 1) for i in range(n)]


# ---------------------------------------------------------------------- published vectors


def test_the_tree_heads_are_the_published_ones():
    assert merkle.EMPTY_ROOT == EMPTY == merkle.root([]) == Tree().root()
    assert merkle.leaf_hash(b"") == chain.leaf_hash(b"") == CT_ROOTS[0]  # the one-leaf tree
    t = Tree(CT_LEAVES)
    for n in range(1, 9):
        assert t.root(n) == CT_ROOTS[n - 1] == merkle.root(CT_LEAVES[:n]) == ref_mth(CT_DATA[:n])


@pytest.mark.parametrize(("index", "size", "path"), CT_INCLUSION)
def test_the_published_inclusion_proofs(index, size, path):
    t = Tree(CT_LEAVES)
    assert t.inclusion_proof(index, size) == path
    merkle.verify_inclusion(index, size, CT_LEAVES[index], path, CT_ROOTS[size - 1])
    for desc, probe in inclusion_mutations(index, size, CT_LEAVES[index], path, CT_ROOTS[size - 1]):
        with pytest.raises(ProofError):
            merkle.verify_inclusion(*probe)
            pytest.fail(f"accepted: {desc}")


@pytest.mark.parametrize(("first", "second", "proof"), CT_CONSISTENCY)
def test_the_published_consistency_proofs(first, second, proof):
    t = Tree(CT_LEAVES)
    assert t.consistency_proof(first, second) == proof
    r1, r2 = CT_ROOTS[first - 1], CT_ROOTS[second - 1]
    merkle.verify_consistency(first, second, r1, r2, proof)
    if proof:
        for desc, probe in consistency_mutations(first, second, r1, r2, proof):
            with pytest.raises(ProofError):
                merkle.verify_consistency(*probe)
                pytest.fail(f"accepted: {desc}")


def test_single_leaf_and_degenerate_cases():
    one = merkle.leaf_hash(b"data")
    merkle.verify_inclusion(0, 1, one, [], one)  # a one-leaf tree's root is its leaf
    for args in [(0, 1, one, [], EMPTY), (0, 0, one, [], one), (1, 1, one, [], one), (0, 1, one, [one], one),
                 (0, 1, b"short", [], one)]:
        with pytest.raises(ProofError):
            merkle.verify_inclusion(*args)
    a, b = H("11" * 32), H("22" * 32)
    merkle.verify_consistency(0, 0, EMPTY, EMPTY, [])
    merkle.verify_consistency(0, 5, EMPTY, a, [])
    merkle.verify_consistency(3, 3, a, a, [])
    for args in [(3, 3, a, b, []), (1, 0, a, b, []), (2, 1, a, b, []), (1, 2, a, b, []),
                 (0, 1, EMPTY, a, [EMPTY]), (3, 3, a, a, [a])]:
        with pytest.raises(ProofError):
            merkle.verify_consistency(*args)


def test_the_split_is_rfc6962s_not_the_midpoint():
    assert [merkle.split(n) for n in (2, 3, 4, 5, 6, 7, 8, 9, 1000)] == [1, 2, 2, 4, 4, 4, 4, 8, 512]


# ---------------------------------------------------------------------- agreement with the reference


def test_every_proof_up_to_40_leaves_equals_the_reference_and_verifies():
    d = data(40)
    t = Tree(merkle.leaf_hash(x) for x in d)
    for n in range(1, 41):
        assert t.root(n) == ref_mth(d[:n])
        for i in range(n):
            assert t.inclusion_proof(i, n) == ref_path(i, d[:n])
            merkle.verify_inclusion(i, n, t.levels[0][i], t.inclusion_proof(i, n), t.root(n))
        for m in range(1, n):
            assert t.consistency_proof(m, n) == ref_subproof(m, d[:n], True)
            merkle.verify_consistency(m, n, t.root(m), t.root(n), t.consistency_proof(m, n))


def test_incremental_nodes_are_the_complete_subtrees():
    d = data(37)
    t = Tree()
    made = [node for x in d for node in t.append(merkle.leaf_hash(x))]
    # A node per completed power-of-two block, each the MTH of exactly its leaves.
    assert len(made) == sum(37 >> level for level in range(1, 6))
    for level, idx, h in made:
        assert h == ref_mth(d[idx << level:(idx + 1) << level])
    assert merkle.siblings_needed(0b1011) == [(0, 0b1010), (1, 0b100)]


# ---------------------------------------------------------------------- mutations


def _flip(h: bytes, byte: int, bit: int) -> bytes:
    b = bytearray(h)
    b[byte] ^= 1 << bit
    return bytes(b)


# A size off by one can have a path of the same shape (leaf 1 of 5 and of 6 turn the same way at
# every level), so the hash alone cannot tell it; that is why a root is only ever trusted together
# with the size it was signed with (checkpoint.py), and why these suites change sizes by x2 and /2.
def inclusion_mutations(index, size, leaf, proof, root):
    yield "index - 1", (index - 1, size, leaf, proof, root)
    yield "index + 1", (index + 1, size, leaf, proof, root)
    yield "index ^ 2", (index ^ 2, size, leaf, proof, root)
    yield "size * 2", (index, size * 2, leaf, proof, root)
    yield "size // 2", (index, size // 2, leaf, proof, root)
    yield "wrong leaf", (index, size, SOME, proof, root)
    yield "leaf is root", (index, size, root, proof, leaf) if leaf != root else (index, size, SOME, proof, root)
    yield "empty root", (index, size, leaf, proof, EMPTY)
    yield "trailing root", (index, size, leaf, [*proof, root], root)
    yield "trailing garbage", (index, size, leaf, [*proof, b""], root)
    yield "preceding root", (index, size, leaf, [root, *proof], root)
    for i in range(len(proof)):
        for byte, bit in ((0, 3), (31, 0), (i % 32, 7)):
            p = list(proof)
            p[i] = _flip(p[i], byte, bit)
            yield f"flipped bit {bit} of byte {byte} of node {i}", (index, size, leaf, p, root)
        yield f"removed node {i}", (index, size, leaf, proof[:i] + proof[i + 1:], root)
        yield f"inserted node at {i}", (index, size, leaf, proof[:i] + [SOME] + proof[i:], root)
        yield f"duplicated node {i}", (index, size, leaf, proof[:i + 1] + proof[i:], root)
    if len(proof) > 1:
        yield "swapped nodes", (index, size, leaf, [proof[1], proof[0], *proof[2:]], root)


def consistency_mutations(first, second, r1, r2, proof):
    yield "first - 1", (first - 1, second, r1, r2, proof)
    yield "first + 1", (first + 1, second, r1, r2, proof)
    yield "first ^ 2", (first ^ 2, second, r1, r2, proof)
    yield "second * 2", (first, second * 2, r1, r2, proof)
    yield "second // 2", (first, second // 2, r1, r2, proof)
    yield "wrong first root", (first, second, SOME, r2, proof)
    yield "wrong second root", (first, second, r1, SOME, proof)
    yield "swapped roots", (first, second, r2, r1, proof)
    yield "empty proof", (first, second, r1, r2, [])
    yield "trailing root1", (first, second, r1, r2, [*proof, r1])
    yield "trailing root2", (first, second, r1, r2, [*proof, r2])
    yield "preceding root1", (first, second, r1, r2, [r1, *proof])
    yield "preceding root2", (first, second, r1, r2, [r2, *proof])
    yield "preceding proof[0]", (first, second, r1, r2, [proof[0], *proof])
    for i in range(len(proof)):
        for byte, bit in ((0, 4), (31, 0), (i % 32, 6)):
            p = list(proof)
            p[i] = _flip(p[i], byte, bit)
            yield f"flipped bit {bit} of byte {byte} of node {i}", (first, second, r1, r2, p)
        yield f"removed node {i}", (first, second, r1, r2, proof[:i] + proof[i + 1:])
        yield f"inserted node at {i}", (first, second, r1, r2, proof[:i] + [SOME] + proof[i:])
    if len(proof) > 1:
        yield "swapped nodes", (first, second, r1, r2, [proof[1], proof[0], *proof[2:]])


def _rejected(fn, probe) -> bool:
    try:
        fn(*probe)
    except ProofError:
        return True
    return False


def test_every_inclusion_mutation_is_rejected_at_every_position_up_to_33_leaves():
    t = Tree(merkle.leaf_hash(x) for x in data(33))
    for n in range(1, 34):
        r = t.root(n)
        for i in range(n):
            proof = t.inclusion_proof(i, n)
            accepted = [d for d, probe in inclusion_mutations(i, n, t.levels[0][i], proof, r)
                        if not _rejected(merkle.verify_inclusion, probe)]
            assert accepted == [], (i, n, accepted)


def test_every_consistency_mutation_is_rejected_up_to_33_leaves():
    t = Tree(merkle.leaf_hash(x) for x in data(33))
    for n in range(2, 34):
        for m in range(1, n):
            proof = t.consistency_proof(m, n)
            accepted = [d for d, probe in consistency_mutations(m, n, t.root(m), t.root(n), proof)
                        if not _rejected(merkle.verify_consistency, probe)]
            assert accepted == [], (m, n, accepted)


# ---------------------------------------------------------------------- properties at random sizes


@st.composite
def tree_and_index(draw):
    n = draw(st.integers(min_value=1, max_value=3000))
    i = draw(st.integers(min_value=0, max_value=n - 1))
    return n, i


_BIG = Tree(merkle.leaf_hash(i.to_bytes(4, "big")) for i in range(3000))


@settings(max_examples=150, deadline=None)
@given(tree_and_index(), st.integers(min_value=0, max_value=255))
def test_inclusion_at_random_sizes(n_i, bit):
    n, i = n_i
    r = _BIG.root(n)
    assert r == merkle.root(_BIG.levels[0][:n])
    proof = _BIG.inclusion_proof(i, n)
    assert len(proof) <= (n - 1).bit_length()
    merkle.verify_inclusion(i, n, _BIG.levels[0][i], proof, r)
    # A proof for one leaf never proves another, and no single flipped bit survives.
    if n > 1:
        j = (i + 1 + bit) % n
        if j != i:
            assert _rejected(merkle.verify_inclusion, (i, n, _BIG.levels[0][j], proof, r))
        p = list(proof)
        k = bit % len(p)
        p[k] = _flip(p[k], bit % 32, bit % 8)
        assert _rejected(merkle.verify_inclusion, (i, n, _BIG.levels[0][i], p, r))


@settings(max_examples=150, deadline=None)
@given(st.integers(min_value=1, max_value=3000), st.integers(min_value=0, max_value=3000),
       st.integers(min_value=0, max_value=255))
def test_consistency_at_random_sizes(a, b, bit):
    m, n = min(a, b), max(a, b)
    proof = _BIG.consistency_proof(m, n)
    merkle.verify_consistency(m, n, _BIG.root(m), _BIG.root(n), proof)
    if 0 < m < n:
        p = list(proof)
        k = bit % len(p)
        p[k] = _flip(p[k], bit % 32, bit % 8)
        assert _rejected(merkle.verify_consistency, (m, n, _BIG.root(m), _BIG.root(n), p))
        assert _rejected(merkle.verify_consistency, (m, n, _BIG.root(n), _BIG.root(m), proof))
        # A tree whose prefix was changed is not consistent with the old head.
        changed = Tree([*_BIG.levels[0][:bit % m], SOME, *_BIG.levels[0][bit % m + 1:n]])
        assert _rejected(merkle.verify_consistency, (m, n, _BIG.root(m), changed.root(n),
                                                     changed.consistency_proof(m, n)))
