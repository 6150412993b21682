/** The shape every `cowshm` sub-command has: its help text is its documentation. */
import { parseArgs as parse } from 'node:util';

export interface Command {
  /** The word after `cowshm`. */
  name: string;
  /** One line for `cowshm --help`. */
  summary: string;
  /** The full `cowshm NAME --help` text. */
  usage: string;
  /** Runs the command; resolves to the exit status. */
  run(args: string[]): Promise<number>;
}

/** A user mistake on the command line: printed with a pointer to the help, exit status 2. */
export class UsageError extends Error {}

/**
 * node:util's parseArgs (strict: unknown options are errors; `--key value`,
 * `--key=value`, `--` ends the options) with its errors turned into
 * UsageErrors of one short line.
 */
export function parseArgs(
  args: string[],
  spec: { flags?: string[]; values?: string[] },
): { flags: Set<string>; values: Map<string, string>; positional: string[] } {
  const options: Record<string, { type: 'boolean' | 'string' }> = {};
  for (const f of spec.flags ?? []) options[f] = { type: 'boolean' };
  for (const v of spec.values ?? []) options[v] = { type: 'string' };
  let parsed: ReturnType<typeof parse>;
  try {
    parsed = parse({ args, options, strict: true, allowPositionals: true });
  } catch (err) {
    throw usageError(err as NodeJS.ErrnoException, spec);
  }
  const flags = new Set<string>();
  const values = new Map<string, string>();
  for (const [key, value] of Object.entries(parsed.values)) {
    if (typeof value === 'boolean') flags.add(key);
    else if (typeof value === 'string') values.set(key, value);
  }
  return { flags, values, positional: parsed.positionals };
}

function usageError(err: NodeJS.ErrnoException, spec: { flags?: string[]; values?: string[] }): Error {
  const option = /'(-[^' ]*)/.exec(err.message)?.[1];
  const key = option?.replace(/^-+/, '');
  switch (err.code) {
    case 'ERR_PARSE_ARGS_UNKNOWN_OPTION':
      return new UsageError(`unknown option ${option ?? err.message}`);
    case 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE':
      if (key !== undefined && spec.flags?.includes(key)) return new UsageError(`--${key} takes no value`);
      return new UsageError(key !== undefined ? `--${key} needs a value` : err.message);
    case 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL':
      return new UsageError(err.message);
    default:
      return err;
  }
}
