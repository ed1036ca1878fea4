#!/usr/bin/env python3
"""Summarizes `strace -f -o FILE` traces: the distinct syscalls a program made, with the
arguments that matter to a guest kernel implementing them (clone flags, futex operations,
mmap protections and flags, files opened, epoll, socket and signal calls), and the calls
that failed with their errors. Used to write tests/programs/SYSCALLS.md:

    strace -f -qq -o /tmp/t.txt PROGRAM ARGS...
    python3 tests/programs/syscalls.py /tmp/t.txt

With `--from-exec PATH`, what comes before the first successful execve of PATH is left
out: `strace -f -o T chroot ROOT PROGRAM` traces chroot's own calls too.
"""

import re
import sys
from collections import OrderedDict

LINE = re.compile(r"^(?:\[pid\s+)?(\d+)\]?\s+(.*)$")
CALL = re.compile(r"^([a-z0-9_]+)\((.*)$")
RESUMED = re.compile(r"^<\.\.\. ([a-z0-9_]+) resumed>(.*)$")
RESULT = re.compile(r"\)\s+=\s+(-?\d+|\?|0x[0-9a-f]+)(?:\s+([A-Z][A-Z0-9_]+))?")


def split_args(text):
    """Splits an argument list at its top-level commas (quotes and brackets respected)."""
    args, depth, cur, quoted, escaped = [], 0, "", False, False
    for ch in text:
        if quoted:
            cur += ch
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                quoted = False
            continue
        if ch == '"':
            quoted = True
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            if depth == 0:
                args.append(cur.strip())
                return args
            depth -= 1
        elif ch == "," and depth == 0:
            args.append(cur.strip())
            cur = ""
            continue
        cur += ch
    if cur.strip():
        args.append(cur.strip())
    return args


def arg(args, i):
    return args[i] if i < len(args) else "?"


def detail(name, args):
    """The part of a call's arguments worth listing, or None."""
    if name == "clone3":
        m = re.search(r"flags=([A-Z0-9_|]+)", arg(args, 0))
        return m.group(1) if m else None
    if name == "clone":
        for a in args:
            if a.startswith("flags="):
                return a[len("flags="):]
        return None
    if name == "futex":
        return arg(args, 1)
    if name == "mmap":
        kind = "file" if arg(args, 4) not in ("-1", "?") else "anon"
        return f"{arg(args, 2)}, {arg(args, 3)} ({kind})"
    if name == "mprotect":
        return arg(args, 2)
    if name == "madvise":
        return arg(args, 2)
    if name in ("open", "openat"):
        path, flags = (arg(args, 0), arg(args, 1)) if name == "open" else (arg(args, 1), arg(args, 2))
        return f"{path} {flags}"
    if name in ("readlink", "access", "stat", "lstat", "execve", "chdir", "unlink", "mkdir"):
        return arg(args, 0)
    if name in ("newfstatat", "faccessat", "faccessat2", "readlinkat", "statx"):
        p = arg(args, 1)
        return p if p != '""' else f'"" {arg(args, -1) if name != "statx" else arg(args, 2)}'
    if name in ("rt_sigprocmask",):
        return arg(args, 0)
    if name == "arch_prctl":
        return arg(args, 0)
    if name == "prctl":
        return arg(args, 0)
    if name in ("prlimit64",):
        return arg(args, 1)
    if name in ("getrlimit", "setrlimit"):
        return arg(args, 0)
    if name == "fcntl":
        return arg(args, 1)
    if name == "epoll_ctl":
        return arg(args, 1)
    if name == "epoll_create1":
        return arg(args, 0)
    if name == "socket":
        return f"{arg(args, 0)}, {arg(args, 1)}"
    if name in ("setsockopt", "getsockopt"):
        return f"{arg(args, 1)}, {arg(args, 2)}"
    if name in ("clock_gettime", "clock_getres", "clock_nanosleep"):
        return arg(args, 0)
    if name == "getrandom":
        return arg(args, 2)
    if name == "ioctl":
        return arg(args, 1)
    if name == "pipe2":
        return arg(args, 1)
    if name == "accept4":
        return arg(args, 3)
    if name == "tgkill":
        return arg(args, 2)
    if name == "kill":
        return arg(args, 1)
    if name == "rseq":
        return None
    if name == "wait4":
        return arg(args, 2)
    if name == "sched_setaffinity":
        return None
    return None


def summarize(path, from_exec=None):
    """The calls of one trace: name -> [count, {detail: count}, {errno: count}], the
    signals seen, and the signals given to rt_sigaction. A call strace split into
    `<unfinished ...>` and `<... resumed>` lines is joined back into one."""
    calls = OrderedDict()
    signals = OrderedDict()
    sigactions = set()
    pending = {}  # pid -> (name, the arguments before the split)

    def record(name, tail):
        entry = calls.setdefault(name, [0, OrderedDict(), OrderedDict()])
        entry[0] += 1
        args = split_args(tail)
        if name == "rt_sigaction":
            sigactions.add(arg(args, 0))
        d = detail(name, args)
        if d is not None:
            entry[1][d] = entry[1].get(d, 0) + 1
        res = RESULT.search(tail)
        if res and res.group(2):
            entry[2][res.group(2)] = entry[2].get(res.group(2), 0) + 1

    started = from_exec is None
    with open(path, errors="replace") as f:
        for raw in f:
            m = LINE.match(raw.rstrip("\n"))
            if not m:
                continue
            pid, rest = m.groups()
            if not started:
                if rest.startswith(f'execve("{from_exec}"') and re.search(r"\) = 0$", rest):
                    started = True
                else:
                    continue
            if rest.startswith("--- ") or rest.startswith("+++ "):
                sig = re.match(r"^(?:---|\+\+\+) (\S+(?: by \S+)?)", rest)
                if sig:
                    signals[sig.group(1)] = signals.get(sig.group(1), 0) + 1
                continue
            r = RESUMED.match(rest)
            if r:
                name, tail = r.groups()
                before = pending.pop(pid, (name, ""))[1]
                record(name, before + tail)
                continue
            c = CALL.match(rest)
            if not c:
                continue
            name, tail = c.groups()
            if tail.endswith("<unfinished ...>"):
                pending[pid] = (name, tail.removesuffix("<unfinished ...>"))
                continue
            record(name, tail)
    # A call still unfinished at the end (exit, a process killed in it) counts too.
    for name, tail in pending.values():
        record(name, tail)
    return calls, signals, sigactions


def main():
    args = sys.argv[1:]
    from_exec = None
    if len(args) >= 2 and args[0] == "--from-exec":
        from_exec, args = args[1], args[2:]
    for path in args:
        calls, signals, sigactions = summarize(path, from_exec)
        print(f"## {path}: {len(calls)} distinct syscalls")
        for name, (count, details, errors) in sorted(calls.items()):
            line = f"- {name} x{count}"
            if details:
                line += ": " + "; ".join(f"{d} x{n}" if n > 1 else d for d, n in details.items())
            if name == "rt_sigaction":
                line += f": {len(sigactions)} signals"
            if errors:
                line += " [errors: " + ", ".join(f"{e} x{n}" for e, n in errors.items()) + "]"
            print(line)
        if signals:
            print("- signals: " + ", ".join(f"{s} x{n}" for s, n in signals.items()))
        print()


if __name__ == "__main__":
    main()
