/** `cowshm checkpoint info FILE`: a checkpoint's header, verified. */
import { checkpointInfo, type CheckpointInfo } from '../../checkpoint/info';
import { parseArgs, UsageError, type Command } from '../command';
import { bytes } from '../format';

const usage = `Usage: cowshm checkpoint info FILE [--json] [--header-only]

Prints a checkpoint's header (kind, region size, page size, checksums, id,
and for a delta its base) and verifies it: the header and page list of every
file in its chain and, unless --header-only, the data checksum of each.
Exit status 0 when the checkpoint (and its chain) is valid, 1 when not.

Options:
  --json         print the header as JSON
  --header-only  check headers only (what Region.restore() does by default)`;

/** The exact count, and for 1 KiB or more the rounded size too. */
function size(n: number): string {
  return n < 1024 ? `${n} bytes` : `${n} bytes (${bytes(n)})`;
}

function text(info: CheckpointInfo): string {
  const lines = [
    `checkpoint   ${info.path}`,
    `kind         ${info.kind}`,
    `version      ${info.version}`,
    `region size  ${size(info.regionSize)}`,
    `page size    ${info.pageSize}`,
    `data pages   ${info.pageCount} from offset ${info.dataOffset}`,
    `file size    ${size(info.fileSize)}`,
    `checksum     ${info.checksum} (XXH64 of the data)`,
    `header sum   ${info.headerChecksum}`,
    `id           ${info.id}`,
    `created      ${info.created.toISOString()}`,
  ];
  if (info.base) {
    lines.push(`base         ${info.base.path} (id ${info.base.id}, checksum ${info.base.checksum})`);
    lines.push(`chain        ${info.chain.join(' <- ')}`);
  }
  lines.push(`verified     ${info.verified === 'full' ? 'headers and data checksums' : 'headers only'}: ok`);
  return lines.join('\n');
}

export const checkpoint: Command = {
  name: 'checkpoint',
  summary: 'print and verify a checkpoint file (checkpoint info FILE)',
  usage,
  async run(args: string[]): Promise<number> {
    const { flags, positional } = parseArgs(args, { flags: ['json', 'header-only'] });
    const [sub, file, ...extra] = positional;
    if (sub !== 'info') throw new UsageError(sub === undefined ? 'missing sub-command' : `unknown sub-command '${sub}'`);
    if (file === undefined) throw new UsageError('missing FILE');
    if (extra.length > 0) throw new UsageError(`unexpected argument '${extra[0]}'`);
    const info = checkpointInfo(file, { verify: flags.has('header-only') ? 'header' : 'full' });
    console.log(flags.has('json') ? JSON.stringify(info, null, 2) : text(info));
    return 0;
  },
};
