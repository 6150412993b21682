/** Text output shared by the commands: byte sizes and aligned tables. */

/** 4294967296 -> "4 GiB", 1536 -> "1.50 KiB", 1000 -> "1000 B", 0 -> "0". */
export function bytes(n: number): string {
  if (n === 0) return '0';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = n;
  while (Math.abs(v) >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  if (i === 0) return `${v} B`;
  return `${v.toFixed(Number.isInteger(v) ? 0 : v < 10 ? 2 : 1)} ${units[i]}`;
}

/** 1048576 -> "1,048,576". */
export function count(n: number | bigint): string {
  return n.toLocaleString('en-US');
}

/**
 * Aligns rows under a header. Columns whose header is in `left` are
 * left-aligned; the rest (numbers) right-aligned. The last column is not padded.
 */
export function table(header: string[], rows: string[][], left: string[] = []): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]): string =>
    cells
      .map((c, i) => {
        if (i === cells.length - 1) return c;
        const w = widths[i] as number;
        return left.includes(header[i] as string) ? c.padEnd(w) : c.padStart(w);
      })
      .join('  ')
      .trimEnd();
  return [line(header), ...rows.map(line)].join('\n');
}
