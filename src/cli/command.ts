/** The shape every `cowshm` sub-command has: its help text is its documentation. */
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

/** A user mistake on the command line: printed with the usage hint, exit status 2. */
export class UsageError extends Error {}

/** Parses `--flag`, `--key value` and `--key=value` arguments against a spec. */
export function parseArgs(
  args: string[],
  spec: { flags?: string[]; values?: string[] },
): { flags: Set<string>; values: Map<string, string>; positional: string[] } {
  const flags = new Set<string>();
  const values = new Map<string, string>();
  const positional: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const arg = args[i] as string;
    if (arg === '--') {
      positional.push(...args.slice(i + 1));
      break;
    }
    if (!arg.startsWith('--')) {
      positional.push(arg);
      continue;
    }
    const eq = arg.indexOf('=');
    const key = eq === -1 ? arg.slice(2) : arg.slice(2, eq);
    if (spec.flags?.includes(key)) {
      if (eq !== -1) throw new UsageError(`--${key} takes no value`);
      flags.add(key);
    } else if (spec.values?.includes(key)) {
      const value = eq === -1 ? args[++i] : arg.slice(eq + 1);
      if (value === undefined) throw new UsageError(`--${key} needs a value`);
      values.set(key, value);
    } else {
      throw new UsageError(`unknown option --${key}`);
    }
  }
  return { flags, values, positional };
}
