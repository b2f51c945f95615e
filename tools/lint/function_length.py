#!/usr/bin/env python3
"""List C and C++ functions longer than a bound (default 80 lines).

    tools/lint/function_length.py [--max N] FILE|DIR...

A function is a brace block whose header (the text since the last ';', '{'
or '}') ends in a parameter list, optionally followed by qualifiers, and is
not a control statement; lambdas and local classes count toward the
function around them. Strings, characters and comments are skipped. A
function may be exempted by a comment `// lint: data table` on the line
before its header (tables of data, not logic). Exits 1 when any function is
over the bound, printing FILE:LINE: NAME is N lines.
"""
import argparse
import os
import re
import sys

CONTROL = re.compile(r"^\s*(if|for|while|switch|catch|do|else|return)\b")
QUALIFIED_END = re.compile(
    r"\)\s*((const|noexcept|override|final|mutable|volatile|&|&&|->\s*[\w:<>,\s\*&]+)\s*)*"
    r"(:\s*[\w:]+\s*[\({].*)?$", re.S)
NAME = re.compile(r"([~\w:]+(?:<[^()]*>)?|operator\s*\S+)\s*\(")


def strip(text):
    """Blank out comments, strings and character literals, keeping newlines."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(text[i:j].replace(text[i:j], " " * (j - i)))
            i = j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append("".join(ch if ch == "\n" else " " for ch in text[i:j]))
            i = j
        elif text.startswith('R"', i):
            m = re.match(r'R"([^(]*)\(', text[i:])
            end = ")" + m.group(1) + '"' if m else '"'
            j = text.find(end, i + 2)
            j = n if j < 0 else j + len(end)
            out.append("".join(ch if ch == "\n" else " " for ch in text[i:j]))
            i = j
        elif c in "\"'":
            j = i + 1
            while j < n and text[j] != c:
                j += 2 if text[j] == "\\" else 1
            out.append(c + " " * (min(j, n) - i - 1) + c)
            i = j + 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def functions(path):
    raw = open(path, encoding="utf-8", errors="replace").read()
    text = strip(raw)
    raw_lines = raw.split("\n")
    header_start, depth, fn = 0, 0, None  # fn: (name, start line, depth at open)
    for i, c in enumerate(text):
        if c == "{":
            if fn is None:
                header = text[header_start:i]
                h = " ".join(header.split())
                if h and not CONTROL.match(h) and "=" not in h.split("(")[0] and QUALIFIED_END.search(h) \
                        and not re.match(r"^\s*(namespace|struct|class|enum|union|extern)\b", h):
                    line = text.count("\n", 0, header_start + len(header) - len(header.lstrip()))
                    m = NAME.search(h)
                    exempt = line > 0 and "lint: data table" in raw_lines[line - 1]
                    fn = (m.group(1) if m else h[:40], line + 1, depth, exempt)
            depth += 1
            header_start = i + 1
        elif c == "}":
            depth -= 1
            if fn is not None and depth == fn[2]:
                end = text.count("\n", 0, i) + 1
                yield fn[0], fn[1], end - fn[1] + 1, fn[3]
                fn = None
            header_start = i + 1
        elif c == ";":
            header_start = i + 1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--max", type=int, default=80)
    ap.add_argument("paths", nargs="+")
    args = ap.parse_args()
    files = []
    for p in args.paths:
        if os.path.isdir(p):
            for root, _, names in os.walk(p):
                files += [os.path.join(root, f) for f in names if f.endswith((".cpp", ".h", ".c"))]
        else:
            files.append(p)
    over = 0
    for f in sorted(files):
        for name, line, length, exempt in functions(f):
            if length > args.max and not exempt:
                print(f"{f}:{line}: {name} is {length} lines (at most {args.max})")
                over += 1
    sys.exit(1 if over else 0)


if __name__ == "__main__":
    main()
