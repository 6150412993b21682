/** `cowshm`: the command line over the public library. */
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { UsageError, type Command } from './command';
import { commands } from './commands';

function version(): string {
  const pkg = JSON.parse(readFileSync(path.join(__dirname, '..', '..', 'package.json'), 'utf8')) as { version: string };
  return pkg.version;
}

function help(): string {
  const width = Math.max(...commands.map((c) => c.name.length));
  return [
    'cowshm: copy-on-write shared memory on Linux, and proof of what is shared',
    '',
    'Usage: cowshm COMMAND [options]',
    '',
    'Commands:',
    ...commands.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`),
    '',
    'Options:',
    '  --help, -h     show help (also: cowshm COMMAND --help)',
    '  --version, -v  show the version',
  ].join('\n');
}

export async function main(argv: string[]): Promise<number> {
  const [first, ...rest] = argv;
  if (first === undefined || first === '--help' || first === '-h' || first === 'help') {
    const target = first === 'help' ? commands.find((c) => c.name === rest[0]) : undefined;
    console.log(target ? target.usage : help());
    return 0;
  }
  if (first === '--version' || first === '-v') {
    console.log(version());
    return 0;
  }
  const command: Command | undefined = commands.find((c) => c.name === first);
  if (!command) {
    console.error(`cowshm: unknown command '${first}'\nRun 'cowshm --help' for the list of commands.`);
    return 2;
  }
  if (rest.includes('--help') || rest.includes('-h')) {
    console.log(command.usage);
    return 0;
  }
  try {
    return await command.run(rest);
  } catch (err) {
    if (err instanceof UsageError) {
      console.error(`cowshm ${command.name}: ${err.message}\nRun 'cowshm ${command.name} --help' for its usage.`);
      return 2;
    }
    const e = err as NodeJS.ErrnoException;
    console.error(`cowshm ${command.name}: ${e.message}`);
    return 1;
  }
}
