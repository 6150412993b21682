/**
 * Finding a mapping's own entry in smaps. Reading smaps walks the page tables
 * of every mapping, so callers that want several entries read it once.
 */
import { native } from '../native';
import { cowshmError, invalidType } from '../errors';
import * as check from '../validate';
import type { Mapped, SmapsEntry } from './types';

export function mappedArgument(m: unknown, what: string): Mapped {
  if (m === null || typeof m !== 'object') throw invalidType(what, 'a View or an object with address and byteLength', m);
  const { address, byteLength } = m as Mapped;
  check.integer(address, `${what}'s "address"`, 1);
  check.integer(byteLength, `${what}'s "byteLength"`, 1);
  if (address % native.pageSize !== 0) throw check.pageAligned(`${what}'s "address"`, address);
  return { address, byteLength };
}

export function roundUp(n: number): number {
  return Math.ceil(n / native.pageSize) * native.pageSize;
}

/** The entry of `m` among the entries of one read of /proc/self/smaps. */
export function usageIn(entries: SmapsEntry[], m: Mapped): SmapsEntry {
  const { address, byteLength } = m;
  const end = address + roundUp(byteLength);
  const entry = entries.find((e) => e.start <= address && address < e.end);
  const at = `0x${address.toString(16)}`;
  if (!entry) throw cowshmError('ERR_COWSHM_NOT_MAPPED', `Nothing is mapped at ${at} in this process (was the view closed?)`);
  if (entry.start !== address || entry.end !== end) {
    // The kernel merges a mapping with a neighbour of the same file at the
    // next file offset, and splits one whose parts differ in protection.
    throw cowshmError(
      'ERR_COWSHM_MAPPING_MERGED',
      `The kernel accounts ${at}-0x${end.toString(16)} as part of ${entry.header.split(' ')[0]}: ` +
        'its figures would not be this mapping\'s alone',
    );
  }
  return entry;
}

