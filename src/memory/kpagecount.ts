/**
 * /proc/kpagecount: one 64-bit count per physical frame, indexed by frame
 * number: how many times the frame is mapped. Root only. Frames are looked up
 * in sorted windows so a large mapping costs a few reads, not one per page.
 */
import * as fs from 'node:fs';
import { preadFully } from './procfs';

const PATH = '/proc/kpagecount';
const WINDOW = 4096; // frames per read: 32 KiB

export type MapCounts = { counts: number[]; reason: null } | { counts: null; reason: string };

/** Map counts for each frame (0 stays 0: an absent page). */
export function mapCounts(frames: readonly number[]): MapCounts {
  let fd: number;
  try {
    fd = fs.openSync(PATH, 'r');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return {
      counts: null,
      reason:
        code === 'EACCES' || code === 'EPERM'
          ? `${PATH} is readable only by root`
          : `${PATH} cannot be opened (${code ?? String(err)})`,
    };
  }
  try {
    const wanted = [...new Set(frames.filter((f) => f !== 0))].sort((a, b) => a - b);
    const byFrame = new Map<number, number>();
    const buf = new BigUint64Array(WINDOW);
    const bytes = new Uint8Array(buf.buffer);
    for (let i = 0; i < wanted.length; ) {
      const base = wanted[i] as number;
      const got = preadFully(fd, bytes, BigInt(base) * 8n) / 8;
      while (i < wanted.length && (wanted[i] as number) < base + WINDOW) {
        const f = wanted[i] as number;
        byFrame.set(f, f - base < got ? Number(buf[f - base]) : 0);
        i++;
      }
    }
    return { counts: frames.map((f) => (f === 0 ? 0 : (byFrame.get(f) ?? 0))), reason: null };
  } catch (err) {
    return { counts: null, reason: `${PATH} could not be read: ${(err as Error).message}` };
  } finally {
    fs.closeSync(fd);
  }
}
