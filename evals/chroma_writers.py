"""Why `agent/store_lock.py` exists: two processes writing one embedded Chroma store, against one after the other.

    python -m evals.chroma_writers            # 2 x 10,000 random 64-d vectors, then 150 exact-vector lookups

Each writer upserts its vectors in batches of 100 (with a query every tenth batch, as a serving process would);
then every seventh batch's first five vectors are looked up, and a lookup whose nearest row is not the row itself
is a miss. One after the other no lookup misses; at the same time the index loses rows (2026-12-05, 2-core machine
shared with a test run: 43 and 12 of 150 in two runs, 0 one after the other), and two processes that create the store
at once fail outright ("table collections already exists"; once a writer died with "Error in compaction").
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

BATCHES, ROWS, DIM = 100, 100, 64
WRITE = """
import sys, chromadb, numpy as np
path, tag, seed, batches, rows, dim = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:7])
col = chromadb.PersistentClient(path=path).get_or_create_collection("writers", metadata={"hnsw:space": "cosine"})
rng = np.random.default_rng(seed)
for i in range(batches):
    ids = [f"{tag}-{i}-{j}" for j in range(rows)]
    col.upsert(ids=ids, embeddings=rng.normal(size=(rows, dim)).tolist(), documents=ids)
    if i % 10 == 0:
        col.query(query_embeddings=rng.normal(size=(1, dim)).tolist(), n_results=3)
"""
WRITERS = (("a", 1), ("b", 2))


def misses(path: Path) -> tuple[int, int]:
    """Exact-vector lookups whose nearest row is not the row itself, of those made."""
    import chromadb

    col = chromadb.PersistentClient(path=str(path)).get_collection("writers")
    missed = asked = 0
    for tag, seed in WRITERS:
        rng = np.random.default_rng(seed)  # replays the writer's draws
        for i in range(BATCHES):
            vectors = rng.normal(size=(ROWS, DIM))
            if i % 10 == 0:
                rng.normal(size=(1, DIM))
            if i % 7 == 0:
                found = col.query(query_embeddings=vectors[:5].tolist(), n_results=1)["ids"]
                missed += sum(found[j][0] != f"{tag}-{i}-{j}" for j in range(5))
                asked += 5
    return missed, asked


def run(path: Path, *, together: bool) -> tuple[int, int, list[str]]:
    """Misses and lookups after the two writers, and the error line of each writer that failed."""
    import chromadb

    # created here first: two processes creating one store at once fail outright ("table collections already exists")
    chromadb.PersistentClient(path=str(path)).get_or_create_collection("writers", metadata={"hnsw:space": "cosine"})
    commands = [[sys.executable, "-c", WRITE, str(path), tag, *map(str, (seed, BATCHES, ROWS, DIM))] for tag, seed in WRITERS]
    if together:
        processes = [subprocess.Popen(command, stderr=subprocess.PIPE, text=True) for command in commands]
        done = [(process, process.communicate()[1]) for process in processes]
    else:
        done = []
        for command in commands:
            process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
            done.append((process, process.communicate()[1]))
    failed = [(err.strip().splitlines() or ["?"])[-1] for process, err in done if process.returncode != 0]
    return (*misses(path), failed)


def main(argv: list[str] | None = None) -> None:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        for together in (False, True):
            missed, asked, failed = run(Path(tmp) / ("together" if together else "apart"), together=together)
            how = "two writers at once" if together else "one after the other"
            print(f"{how}: {missed} of {asked} lookups missed their own row" + "".join(f"; a writer failed: {f}" for f in failed))

if __name__ == "__main__":
    main()
