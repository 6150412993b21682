/** Helpers shared by the checkpoint tests. */
import { Region } from 'cowshm';

/** A new memfd region of `size` bytes filled with a xorshift sequence from `seed`, and its bytes. */
export function filled(size: number, seed = 1): { region: Region; bytes: Uint8Array } {
  const region = Region.create({ size });
  const view = region.map();
  const words = new Uint32Array(view.buffer, 0, Math.floor(size / 4));
  let x = seed >>> 0 || 1;
  for (let i = 0; i < words.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    words[i] = x >>> 0;
  }
  return { region, bytes: new Uint8Array(view.buffer) };
}
