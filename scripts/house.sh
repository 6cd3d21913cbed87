#!/usr/bin/env bash
# The house as a newcomer meets it: Rust files and lines per folder of src/ (and tests/), the largest files, and
# the import circles between files of one folder. An arrow is a `crate::…` or `super::…` path a file names
# (in `use` lines or in code, `{…}` groups expanded), resolved to the file that defines the module it reaches;
# comments, string literals and `#[cfg(test)]` code are left out: the circles that ship. Needs only python3.
#
#   scripts/house.sh            # from the repository root, or `make house`
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 - "$@" <<'PY'
import os, re, sys
from collections import defaultdict

SRC = "src"

def strip(text):
    """Comments removed, string contents blanked, #[cfg(test)] inline modules removed."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            while i < n and text[i] != "\n":
                i += 1
        elif text.startswith("/*", i):
            depth = 0
            while i < n:
                if text.startswith("/*", i):
                    depth += 1; i += 2
                elif text.startswith("*/", i):
                    depth -= 1; i += 2
                    if depth == 0:
                        break
                else:
                    i += 1
        elif c == '"' or (c == "r" and re.match(r'r#*"', text[i:i+4]) and (i == 0 or not (text[i-1].isalnum() or text[i-1] == "_"))):
            m = re.match(r'(b?r(#*))?"', text[i:])
            hashes = m.group(2) or "" if m.group(1) else None
            j = i + m.end()
            if hashes is None:
                while j < n and text[j] != '"':
                    j += 2 if text[j] == "\\" else 1
                j += 1
            else:
                end = text.find('"' + hashes, j)
                j = n if end < 0 else end + 1 + len(hashes)
            out.append('""'); i = j
        elif c == "'" and i + 2 < n and (text[i+1] == "\\" or text[i+2] == "'"):
            j = text.find("'", i + 2 if text[i+1] == "\\" else i + 1)
            out.append("' '"); i = (j + 1) if j > 0 else n
        else:
            out.append(c); i += 1
    code = "".join(out)
    # Drop `#[cfg(test)] mod x { … }` bodies.
    while True:
        m = re.search(r"#\[cfg\(test\)\]\s*(pub(\([^)]*\))?\s+)?mod\s+\w+\s*\{", code)
        if not m:
            break
        depth, j = 0, m.end() - 1
        while j < len(code):
            if code[j] == "{": depth += 1
            elif code[j] == "}":
                depth -= 1
                if depth == 0: break
            j += 1
        code = code[:m.start()] + code[j+1:]
    return code

def module_of(path):
    rel = os.path.relpath(path, SRC)[:-3].split(os.sep)
    if rel[-1] in ("mod", "lib", "main"):
        rel = rel[:-1]
    return tuple(rel)

def use_tree(code, at):
    """Paths named by the use-tree at `at`, and where it ends."""
    while at < len(code) and code[at].isspace(): at += 1
    if at < len(code) and code[at] == "{":
        at += 1; paths = []
        while True:
            while at < len(code) and (code[at].isspace() or code[at] == ","): at += 1
            if at >= len(code) or code[at] == "}":
                return paths, at + 1
            more, nxt = use_tree(code, at)
            paths += more
            if nxt == at: return paths, at + 1
            at = nxt
    m = re.match(r"[A-Za-z_][A-Za-z0-9_]*|\*", code[at:])
    if not m: return [], at
    name, at = m.group(0), at + m.end()
    if code.startswith("::", at):
        rest, nxt = use_tree(code, at + 2)
        return ([[name] + [s for s in p if s != "self"] for p in rest] or [[name]]), nxt
    return [[name]], at

def targets(code, module):
    out = []
    for m in re.finditer(r"(?<![\w:])(crate::|(?:super::)+)", code):
        prefix = m.group(1)
        if prefix == "crate::":
            base = []
        else:
            ups = prefix.count("super::")
            base = list(module[:len(module) - ups]) if ups <= len(module) else []
        paths, _ = use_tree(code, m.end())
        out += [tuple(base + p) for p in paths]
    return out

files = sorted(os.path.join(d, f) for d, _, fs in os.walk(SRC) for f in fs if f.endswith(".rs"))
by_module = {module_of(f): f for f in files}
lines = {f: sum(1 for _ in open(f)) for f in files}

def owner(path):
    """The file that defines the longest prefix of `path`."""
    for k in range(len(path), 0, -1):
        if path[:k] in by_module:
            return by_module[path[:k]]
    return None

edges = defaultdict(set)
for f in files:
    if os.path.basename(f) == "tests.rs":
        continue
    code = strip(open(f).read())
    for t in targets(code, module_of(f)):
        g = owner(t)
        if g and g != f and os.path.dirname(g) == os.path.dirname(f):
            edges[f].add(g)

def sccs(nodes):
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]
    def visit(v):
        index[v] = low[v] = counter[0]; counter[0] += 1; stack.append(v); on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w); low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop(); on.discard(w); comp.append(w)
                if w == v: break
            if len(comp) > 1: out.append(sorted(comp))
    for v in nodes:
        if v not in index: visit(v)
    return out

print("## Files per folder (Rust files, lines)\n")
folders = defaultdict(lambda: [0, 0])
for f in files:
    d = os.path.dirname(f); folders[d][0] += 1; folders[d][1] += lines[f]
for d in sorted(folders):
    print(f"  {d + '/':<34} {folders[d][0]:>3} files {folders[d][1]:>6} lines")
tests = sorted(f for f in os.listdir("tests") if f.endswith(".rs"))
support = sorted(f for f in os.listdir("tests/support") if f.endswith(".rs"))
tlines = sum(sum(1 for _ in open(os.path.join("tests", f))) for f in tests)
slines = sum(sum(1 for _ in open(os.path.join("tests/support", f))) for f in support)
print(f"  {'tests/':<34} {len(tests):>3} files {tlines:>6} lines")
print(f"  {'tests/support/':<34} {len(support):>3} files {slines:>6} lines")
print(f"\n  total: {len(files)} files, {sum(lines.values())} lines in src/")

print("\n## Largest files\n")
for f in sorted(files, key=lambda f: -lines[f])[:15]:
    print(f"  {lines[f]:>5}  {f}")

print("\n## Import circles between files of one folder (shipped code)\n")
circles = sccs(files)
if not circles:
    print("  none")
for comp in circles:
    print("  " + " <-> ".join(comp))
    for a in comp:
        for b in sorted(edges[a]):
            if b in comp:
                print(f"      {a} -> {b}")
sys.exit(0)
PY
