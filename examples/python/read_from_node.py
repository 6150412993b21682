"""Read and change a segment that cowshm created.

Node:    const r = Region.create({ name: 'prices', size: 4 * n }); new Int32Array(r.map().buffer) ...
Python:  python3 read_from_node.py prices n

Prints one JSON line: the number of elements, their sum and the first value,
then writes -1 into element 0 so the Node side can see the change.
"""
import json
import sys

import numpy as np

from shm_attach import untracked


def main():
    name, count = sys.argv[1], int(sys.argv[2])
    shm = untracked(name)  # same name as cowshm's: /dev/shm/<name>
    try:
        # '<i4' is Int32Array: 32-bit, little-endian (x86-64 and aarch64 Linux).
        a = np.ndarray((count,), dtype="<i4", buffer=shm.buf)
        result = {"size": shm.size, "count": int(a.size), "sum": str(int(a.sum(dtype=np.int64))), "first": int(a[0])}
        a[0] = -1
        # The array must let go of the buffer before close(), or Python raises BufferError.
        del a
    finally:
        shm.close()  # this process lets go; the segment stays (never unlink() here)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
