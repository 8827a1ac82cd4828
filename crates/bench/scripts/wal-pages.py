#!/usr/bin/env python3
"""Which tables and indexes each commit of a SQLite write-ahead log wrote
(BENCHMARKS.md, "Twelfth session").

    python3 crates/bench/scripts/wal-pages.py WAL_COPY DATABASE [COMMITS]

WAL_COPY: a copy of the server's `-wal` file taken during a load (cp while it
runs; only frames of complete commits under the log's current salts count).
DATABASE: the database file, read only, after the run (its pages are mapped
to tables and indexes with SQLite's dbstat). COMMITS: how many of the last
commits to count (default 400). Sign-up batches are the commits that wrote a
page of the national-ID index; the others are the dispatcher's and upkeep's.
"""
import collections
import sqlite3
import struct
import sys


def main():
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    wal, database = sys.argv[1], sys.argv[2]
    last_n = int(sys.argv[3]) if len(sys.argv) == 4 else 400
    db = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    names = dict(db.execute("SELECT pageno, name FROM dbstat"))
    names[1] = "page 1 (header)"
    commits, current = [], []
    with open(wal, "rb") as f:
        header = f.read(32)
        if len(header) < 32 or struct.unpack(">I", header[:4])[0] not in (0x377F0682, 0x377F0683):
            sys.exit(f"{wal}: not a SQLite write-ahead log")
        page_size, salt1, salt2 = struct.unpack(">I", header[8:12])[0], *struct.unpack(">2I", header[16:24])
        while True:
            frame = f.read(24)
            if len(frame) < 24:
                break
            page, commit_size, s1, s2 = struct.unpack(">4I", frame[:16])
            if (s1, s2) != (salt1, salt2):
                break
            f.seek(page_size, 1)
            current.append(page)
            if commit_size:
                commits.append(current)
                current = []
    last = commits[-last_n:]
    print(f"{len(commits)} complete commits in the log; the last {len(last)} counted")
    batches = [c for c in last if any(names.get(p) == "sqlite_autoindex_registrants_1" for p in c)]
    others = [c for c in last if not any(names.get(p) == "sqlite_autoindex_registrants_1" for p in c)]
    for label, group in (("sign-up batches", batches), ("other commits", others)):
        if not group:
            continue
        counts = collections.Counter(names.get(p, "(page since freed)") for c in group for p in c)
        frames = sum(map(len, group)) / len(group)
        print(f"{label}: {len(group)}, {frames:.1f} pages each")
        for name, n in counts.most_common():
            print(f"  {name:<38} {n / len(group):6.2f}")


if __name__ == "__main__":
    main()
