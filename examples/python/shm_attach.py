"""Open a POSIX shared memory segment by name without letting Python remove it.

multiprocessing.shared_memory.SharedMemory registers every segment it opens,
even one it only attached to, with the resource_tracker process. When the last
Python process using that tracker exits, the tracker unlinks every registered
segment ("leaked shared_memory objects to clean up at shutdown"), so a segment
created by cowshm (or any other program) disappears for everyone.

Python 3.13 added SharedMemory(..., track=False) to skip the registration; on
older versions the registration has to be undone by hand. Both are done here.
"""
import sys
from multiprocessing import resource_tracker, shared_memory


def untracked(name, create=False, size=0):
    """SharedMemory(name) that this Python process will never unlink on exit."""
    if sys.version_info >= (3, 13):
        return shared_memory.SharedMemory(name=name, create=create, size=size, track=False)
    shm = shared_memory.SharedMemory(name=name, create=create, size=size)
    # shm._name is the name as passed to shm_open, with its leading '/'.
    resource_tracker.unregister(shm._name, "shared_memory")
    return shm
