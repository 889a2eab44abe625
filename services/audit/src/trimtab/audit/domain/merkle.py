"""The RFC 6962 / RFC 9162 Merkle tree over the audit record's leaves: tree heads, proofs, checks.

Leaves are the records' leaf hashes, `SHA-256(0x00 || envelope bytes)` (chain.leaf_hash), in seq
order: leaf index i is record seq i + 1. An interior node is `SHA-256(0x01 || left || right)`; the
tree over n leaves splits at the largest power of two below n (RFC 9162 section 2.1.1), and the
empty tree's head is SHA-256 of nothing.

Generation is written against *ranges* of leaves, not against a list of hashes, so the same
code serves an in-memory tree (tests, the offline verifier) and the database, which stores every
complete, aligned subtree ("node" (level, index) covers leaves [index * 2**level, (index + 1) *
2**level)) as records arrive. Any range a proof needs is either such a node or a right-edge range
that splits into O(log n) of them (`decompose`), so a proof at any size costs O(log n) reads.

Verification follows the algorithms of RFC 9162 section 2.1.3.2 (inclusion) and 2.1.4.2
(consistency) step by step; it never trusts the proof's length or shape.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence

HASH_BYTES = 32
LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
EMPTY_ROOT = hashlib.sha256(b"").digest()

#: A node's address: (level, index), covering leaves [index << level, (index + 1) << level).
NodeId = tuple[int, int]
#: A range of leaves [start, end).
Range = tuple[int, int]


class ProofError(ValueError):
    """A proof that does not prove what it claims."""


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def split(n: int) -> int:
    """The largest power of two strictly smaller than n (n >= 2): where RFC 9162 splits."""
    if n < 2:
        raise ValueError("only trees of two or more leaves split")
    return 1 << ((n - 1).bit_length() - 1)


# ---------------------------------------------------------------------- tree heads


def root(leaves: Sequence[bytes]) -> bytes:
    """MTH over leaf hashes, bottom up: pair neighbours, carry an odd last node up unchanged.

    That is the same tree as the recursive split definition (the left part of every split is a
    complete power-of-two subtree), computed without recursion for a million leaves."""
    if not leaves:
        return EMPTY_ROOT
    level = list(leaves)
    while len(level) > 1:
        nxt = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


def decompose(start: int, end: int) -> list[NodeId]:
    """The complete aligned subtrees whose RFC 9162 combination is MTH(D[start:end]), left to right.

    Valid for every range a proof or tree head asks for: ranges that start on a boundary of
    their own split (every left part of a split is complete and aligned)."""
    out: list[NodeId] = []
    while start < end:
        size = end - start
        level = size.bit_length() - 1  # the largest power of two not above size
        if start % (1 << level):
            raise ValueError(f"range [{start}, {end}) does not start on a subtree boundary")
        out.append((level, start >> level))
        start += 1 << level
    return out


def combine(hashes: Sequence[bytes]) -> bytes:
    """Fold the hashes of a decomposition (left to right) into the range's MTH: right-associated,
    because each split's left part is the big complete subtree and its right part the rest."""
    if not hashes:
        return EMPTY_ROOT
    acc = hashes[-1]
    for h in reversed(hashes[:-1]):
        acc = node_hash(h, acc)
    return acc


def inclusion_ranges(index: int, size: int) -> list[Range]:
    """The ranges whose MTHs form PATH(index, D[0:size]) (RFC 6962 section 2.1.1), leaf side first."""
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} is not in a tree of size {size}")
    out: list[Range] = []
    start, end, m = 0, size, index
    while end - start > 1:
        k = split(end - start)
        if m < k:
            out.append((start + k, end))
            end = start + k
        else:
            out.append((start, start + k))
            start, m = start + k, m - k
    out.reverse()
    return out


def consistency_ranges(first: int, second: int) -> list[Range]:
    """The ranges whose MTHs form PROOF(first, D[0:second]) (RFC 6962 section 2.1.2)."""
    if not 0 <= first <= second:
        raise ValueError(f"no consistency proof from size {first} to size {second}")
    if first == 0 or first == second:
        return []
    out: list[Range] = []
    start, end, m, whole = 0, second, first, True
    while True:
        n = end - start
        if m == n:
            if not whole:
                out.append((start, end))
            break
        k = split(n)
        if m <= k:
            out.append((start + k, end))
            end = start + k
        else:
            out.append((start, start + k))
            start, m, whole = start + k, m - k, False
    out.reverse()
    return out


def nodes_for(ranges: Iterable[Range]) -> list[NodeId]:
    """Every stored node needed to compute the given ranges' MTHs (deduplicated)."""
    seen: dict[NodeId, None] = {}
    for start, end in ranges:
        for node in decompose(start, end):
            seen.setdefault(node, None)
    return list(seen)


def hashes_for(ranges: Iterable[Range], nodes: Mapping[NodeId, bytes]) -> list[bytes]:
    """The ranges' MTHs from looked-up node hashes (a missing node is a KeyError: a gap in the store)."""
    return [combine([nodes[n] for n in decompose(s, e)]) for s, e in ranges]


# ---------------------------------------------------------------------- an in-memory tree


class Tree:
    """All levels of a tree in memory: for tests and for a verifier that has every leaf.

    `levels[L][i]` is node (L, i), the complete subtree hash, as the database stores it."""

    def __init__(self, leaves: Iterable[bytes] = ()) -> None:
        self.levels: list[list[bytes]] = [[]]
        for leaf in leaves:
            self.append(leaf)

    @property
    def size(self) -> int:
        return len(self.levels[0])

    def append(self, leaf: bytes) -> list[tuple[int, int, bytes]]:
        """Add a leaf; return the new complete nodes above it (level >= 1) as the store would."""
        index = self.size
        self.levels[0].append(leaf)
        made = []
        for level, idx, h in completed_nodes(index, leaf, lambda lv, i: self.levels[lv][i]):
            if len(self.levels) <= level:
                self.levels.append([])
            self.levels[level].append(h)
            made.append((level, idx, h))
        return made

    def node(self, node: NodeId) -> bytes:
        return self.levels[node[0]][node[1]]

    def range_hash(self, start: int, end: int) -> bytes:
        return combine([self.node(n) for n in decompose(start, end)])

    def root(self, size: int | None = None) -> bytes:
        return self.range_hash(0, self.size if size is None else size)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        return [self.range_hash(s, e) for s, e in inclusion_ranges(index, self.size if size is None else size)]

    def consistency_proof(self, first: int, second: int | None = None) -> list[bytes]:
        return [self.range_hash(s, e) for s, e in consistency_ranges(first, self.size if second is None else second)]


def completed_nodes(index: int, leaf: bytes, node_at: Callable[[int, int], bytes]) -> list[tuple[int, int, bytes]]:
    """The nodes (level >= 1) completed by appending leaf `index`: while the node just finished is a
    right child, hash it with its left sibling (already stored) into their parent."""
    out = []
    h, level, i = leaf, 0, index
    while i & 1:
        h = node_hash(node_at(level, i - 1), h)
        level, i = level + 1, i >> 1
        out.append((level, i, h))
    return out


class Frontier:
    """The right edge of a tree: the complete subtrees `decompose(0, size)`, O(log n) hashes.

    That is all an append needs (every left sibling a new leaf can meet is on it) and all a tree
    head needs, so a writer loads it once and then adds any number of leaves in memory, and a
    verifier computes the root of a million streamed leaves without keeping them."""

    def __init__(self, size: int = 0, nodes: Mapping[NodeId, bytes] | None = None) -> None:
        self.size = size
        edge = decompose(0, size)
        if edge and nodes is None:
            raise ValueError("a non-empty frontier needs its nodes")
        self._edge: list[tuple[int, int, bytes]] = [(lv, i, nodes[(lv, i)]) for lv, i in edge] if nodes else []

    def append(self, leaf: bytes) -> list[tuple[int, int, bytes]]:
        """Add the next leaf; the nodes it completes, the leaf itself (level 0) first."""
        index = self.size
        self.size += 1
        out = [(0, index, leaf)]
        h, level, i = leaf, 0, index
        edge = self._edge
        while i & 1:
            lv, li, left = edge.pop()
            if (lv, li) != (level, i - 1):  # pragma: no cover - the edge is the decomposition
                raise AssertionError(f"frontier out of step: {(lv, li)} is not the sibling of {(level, i)}")
            h = hashlib.sha256(NODE_PREFIX + left + h).digest()
            level, i = level + 1, i >> 1
            out.append((level, i, h))
        edge.append((level, i, h))
        return out

    def extend(self, leaves: Iterable[bytes]) -> None:
        """Add leaves without reporting the nodes (a verifier that only wants the root)."""
        sha, prefix = hashlib.sha256, NODE_PREFIX
        edge, index = self._edge, self.size
        for h in leaves:
            level, i = 0, index
            while i & 1:
                h = sha(prefix + edge.pop()[2] + h).digest()
                level, i = level + 1, i >> 1
            edge.append((level, i, h))
            index += 1
        self.size = index

    def root(self) -> bytes:
        return combine([h for _, _, h in self._edge])


def siblings_needed(index: int) -> list[NodeId]:
    """The stored nodes `completed_nodes(index, ...)` reads: the left siblings on its way up."""
    out, level, i = [], 0, index
    while i & 1:
        out.append((level, i - 1))
        level, i = level + 1, i >> 1
    return out


# ---------------------------------------------------------------------- verification (RFC 9162)


def _check_hash(h: bytes, what: str) -> None:
    if not isinstance(h, bytes | bytearray) or len(h) != HASH_BYTES:
        raise ProofError(f"{what} is not a {HASH_BYTES}-byte hash")


def root_from_inclusion_proof(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """RFC 9162 section 2.1.3.2 steps 1-4: the root the proof leads to (raises when malformed)."""
    _check_hash(leaf, "leaf hash")
    if not 0 <= index < size:  # step 1
        raise ProofError(f"leaf index {index} is not below tree size {size}")
    fn, sn = index, size - 1  # step 2
    r = leaf  # step 3
    for p in proof:  # step 4
        _check_hash(p, "proof node")
        if sn == 0:  # 4a: more nodes than the path has
            raise ProofError("inclusion proof is longer than the path")
        if fn & 1 or fn == sn:  # 4b
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1  # 4c
    if sn != 0:  # step 5, first half: fewer nodes than the path has
        raise ProofError("inclusion proof is shorter than the path")
    return r


def verify_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes], root_hash: bytes) -> None:
    """Raise ProofError unless `proof` proves leaf `leaf` is at `index` of the tree `root_hash`/`size`."""
    _check_hash(root_hash, "root hash")
    if root_from_inclusion_proof(index, size, leaf, proof) != root_hash:  # step 5
        raise ProofError("inclusion proof does not lead to the root hash")


def verify_consistency(first: int, second: int, first_root: bytes, second_root: bytes,
                       proof: Sequence[bytes]) -> None:
    """Raise ProofError unless `proof` shows tree `first_root`/`first` is a prefix of
    `second_root`/`second` (RFC 9162 section 2.1.4.2)."""
    _check_hash(first_root, "first root")
    _check_hash(second_root, "second root")
    if not 0 <= first <= second:
        raise ProofError(f"tree size {second} is smaller than {first}: the log went back in time")
    if first == second:  # the same tree: nothing to prove, the heads must agree
        if proof:
            raise ProofError("a consistency proof between equal sizes must be empty")
        if first_root != second_root:
            raise ProofError("two different roots for the same tree size")
        return
    if first == 0:  # the empty tree is a prefix of every tree
        if proof:
            raise ProofError("a consistency proof from the empty tree must be empty")
        return
    if not proof:  # step 1
        raise ProofError("empty consistency proof")
    for c in proof:
        _check_hash(c, "proof node")
    path = list(proof)
    if first & (first - 1) == 0:  # step 2: first is a power of two
        path.insert(0, first_root)
    fn, sn = first - 1, second - 1  # step 3
    while fn & 1:  # step 4
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]  # step 5
    for c in path[1:]:  # step 6
        if sn == 0:  # 6a
            raise ProofError("consistency proof is longer than the path")
        if fn & 1 or fn == sn:  # 6b
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1  # 6c
    if sn != 0:  # step 7
        raise ProofError("consistency proof is shorter than the path")
    if fr != first_root:
        raise ProofError("consistency proof does not lead to the first root")
    if sr != second_root:
        raise ProofError("consistency proof does not lead to the second root")
