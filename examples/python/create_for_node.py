"""Create a segment in Python that cowshm (or any other program) opens by name.

Python:  python3 create_for_node.py prices n
Node:    const r = Region.open('prices'); const a = new Float64Array(r.map().buffer);

Fills n float64 values with i / 2 and exits, leaving the segment in /dev/shm
for the other side, which unlinks it when done.
"""
import sys

import numpy as np

from shm_attach import untracked


def main():
    name, count = sys.argv[1], int(sys.argv[2])
    shm = untracked(name, create=True, size=count * 8)  # O_CREAT | O_EXCL, mode 0600
    try:
        # '<f8' is Float64Array.
        a = np.ndarray((count,), dtype="<f8", buffer=shm.buf)
        a[:] = np.arange(count, dtype="<f8") / 2
        del a
    finally:
        shm.close()
    print(name)


if __name__ == "__main__":
    main()
