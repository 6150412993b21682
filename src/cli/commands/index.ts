/** Every sub-command, in the order `cowshm --help` lists them. */
import type { Command } from '../command';

export const commands: Command[] = [];
