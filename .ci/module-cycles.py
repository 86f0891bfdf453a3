#!/usr/bin/env python3
"""Fails when the modules of a crate import each other in a circle.

    python3 .ci/module-cycles.py runtime/src sidecar/src agents/src ...

An edge A -> B is a path A names that resolves to module B of the same crate: `crate::x::y`,
`super::x`, `self::x`, or a child module used by name from its parent (`use append::Plan`).
A module naming one of its own ancestors (`super::EventRow` in a child of `events`) is not an
edge: the ancestor contains it, as `mod` declares. Prints every cycle found (Tarjan's strongly
connected components), exits 1 if there is one.
"""
import re
import sys
from pathlib import Path

PATH = re.compile(r"\b(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)+)")
USE_CHILD = re.compile(r"^\s*(?:pub(?:\([^)]*\))?\s+)?use\s+([a-z_][a-z0-9_]*)::", re.M)
COMMENT = re.compile(r"//[^\n]*")


def module_of(root: Path, f: Path) -> tuple:
    parts = list(f.relative_to(root).with_suffix("").parts)
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return tuple(parts)


def graph(root: Path) -> dict:
    files = {module_of(root, f): f for f in root.rglob("*.rs")}
    edges = {m: set() for m in files}

    def resolve(path: tuple):
        for n in range(len(path), 0, -1):
            if path[:n] in files:
                return path[:n]
        return None

    for m, f in files.items():
        text = COMMENT.sub("", f.read_text())
        is_dir = f.name in ("mod.rs", "lib.rs", "main.rs")
        here = m if is_dir else m[:-1]  # the module `self::` and children are relative to
        targets = []
        for head, tail in PATH.findall(text):
            names = tuple(tail.strip(":").split("::"))
            if head == "crate":
                targets.append(names)
            elif head == "self":
                targets.append((m if is_dir else m) + names)
            else:
                up = m[:-1]
                while names and names[0] == "super":
                    names, up = names[1:], up[:-1]
                targets.append(up + names)
        for child in USE_CHILD.findall(text):
            if (m + (child,)) in files and is_dir:
                targets.append(m + (child,))
            elif (here + (child,)) in files:
                targets.append(here + (child,))
        for t in targets:
            r = resolve(t)
            # Not an edge: itself, or a module that contains it.
            if r is None or r == m or m[: len(r)] == r:
                continue
            edges[m].add(r)
    return edges


def cycles(edges: dict) -> list:
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in edges:
        if v not in index:
            visit(v)
    return out


def main() -> int:
    found = 0
    for arg in sys.argv[1:]:
        root = Path(arg)
        edges = graph(root)
        cs = cycles(edges)
        n = sum(len(e) for e in edges.values())
        print(f"{root}: {len(edges)} modules, {n} import edges, {len(cs)} cycles")
        for c in cs:
            found += 1
            print("  cycle: " + " <-> ".join("::".join(m) or "(root)" for m in c))
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
