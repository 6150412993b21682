/** Every sub-command, in the order `cowshm --help` lists them. */
import type { Command } from '../command';
import { inspect } from './inspect';

export const commands: Command[] = [inspect];
