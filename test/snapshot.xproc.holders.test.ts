// snapshot.unregisteredHolders: processes that can write the region without
// taking part in its cross-process snapshots are named on the snapshot, from
// /proc (maps, smaps VmFlags, fdinfo and its lock lines); those that take
// part, and those that cannot write, are not.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { Region, pageSize } from 'cowshm';
import { uniqueName } from './helpers';
import { coordinationFile, cowshmPeer, gone, startPeer, stopPeer, type Peer } from './xproc-helpers';

const python = spawnSync('python3', ['-c', 'print(1)'], { encoding: 'utf8' });
const noPython = python.status === 0 ? undefined : `python3 is not available: ${python.error?.message ?? python.stderr}`;

// A plain Python program holding the segment: `how` says how.
const HOLDER = `
import ctypes, os, sys, time
path, how = sys.argv[1], sys.argv[2]
flags = os.O_RDONLY if how in ('read-map', 'read-fd') else os.O_RDWR
fd = os.open(path, flags)
size = os.fstat(fd).st_size
# mmap(2) itself: Python's mmap module would keep a duplicate of the descriptor.
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
PROT_READ, PROT_WRITE, MAP_SHARED = 1, 2, 1
if how in ('write-map', 'read-map', 'rw-fd-read-map'):
    prot = PROT_READ | PROT_WRITE if how == 'write-map' else PROT_READ
    addr = libc.mmap(None, size, prot, MAP_SHARED, fd, 0)
    assert addr not in (None, ctypes.c_void_p(-1).value), os.strerror(ctypes.get_errno())
    if how == 'write-map':
        ctypes.c_uint8.from_address(addr).value = 1
    # Only the mapping is left. A read-only one from a read-write descriptor
    # may still be made writable (mprotect): VmFlags 'mw'.
    os.close(fd)
print('ready', flush=True)
time.sleep(120)
`;

function pythonHolder(file: string, how: string): Promise<Peer> {
  return startPeer('python3', ['-c', HOLDER, file, how]);
}

test("unregisteredHolders names writers that do not take part, not participants or read-only holders", { skip: noPython }, async () => {
  const name = uniqueName('holders');
  const r = Region.create({ name, size: 16 * pageSize, mode: 0o600, crossProcess: true });
  const file = `/dev/shm/${name}`;
  const peers: Record<string, Peer> = {};
  try {
    peers['pyWriteMap'] = await pythonHolder(file, 'write-map');
    peers['pyWriteFd'] = await pythonHolder(file, 'write-fd');
    peers['pyMayWrite'] = await pythonHolder(file, 'rw-fd-read-map');
    peers['pyReadMap'] = await pythonHolder(file, 'read-map');
    peers['pyReadFd'] = await pythonHolder(file, 'read-fd');
    peers['participant'] = await cowshmPeer(name, 'participant');
    peers['plain'] = await cowshmPeer(name, 'plain');
    peers['reader'] = await cowshmPeer(name, 'reader');
    const s = r.snapshot({ scope: 'processes', timeoutMs: 5000 });
    try {
      const listed = s.unregisteredHolders;
      assert.ok(listed !== null);
      const pid = (k: string): number => (peers[k] as Peer).pid;
      const expected = ['pyWriteMap', 'pyWriteFd', 'pyMayWrite', 'plain'].map(pid).sort((a, b) => a - b);
      assert.deepEqual(listed.filter((p) => Object.values(peers).some((x) => x.pid === p)), expected);
      assert.ok(!listed.includes(process.pid), 'this process takes part');
      assert.ok(Object.isFrozen(listed));
      assert.equal(s.unregisteredHolders, listed, 'found once, then kept');
      assert.ok(Array.isArray(s.uninspectedProcesses));
      for (const p of Object.values(peers)) assert.ok(!(s.uninspectedProcesses as readonly number[]).includes(p.pid), 'own processes can be inspected');
    } finally {
      s.release();
    }
    // A process-scope snapshot is outside every other process: nothing to say.
    const local = r.snapshot();
    assert.equal(local.unregisteredHolders, null);
    assert.equal(local.uninspectedProcesses, null);
    local.release();
  } finally {
    for (const p of Object.values(peers)) await stopPeer(p);
    r.unlink();
    r.close();
  }
  assert.equal(await gone(coordinationFile(r)), true);
});

test('unregisteredHolders includes this process when it writes the region without taking part', async () => {
  const name = uniqueName('holders-self');
  const r = Region.create({ name, size: 4 * pageSize, mode: 0o600 }); // no crossProcess: not a participant
  const participant = await cowshmPeer(name, 'participant');
  try {
    const s = r.snapshot({ scope: 'processes', timeoutMs: 5000 });
    assert.ok((s.unregisteredHolders as readonly number[]).includes(process.pid));
    assert.ok(!(s.unregisteredHolders as readonly number[]).includes(participant.pid));
    s.release();
    const ro = Region.open(name, { readOnly: true });
    r.close(); // only the read-only Region is left here
    const s2 = ro.snapshot({ scope: 'processes', timeoutMs: 5000 });
    assert.ok(!(s2.unregisteredHolders as readonly number[]).includes(process.pid), 'read-only: cannot write, not listed');
    s2.release();
    ro.unlink();
    ro.close();
  } finally {
    await stopPeer(participant);
    if (!r.closed) {
      r.unlink();
      r.close();
    }
  }
  assert.equal(await gone(coordinationFile(r)), true);
});
