/** Every sub-command, in the order `cowshm --help` lists them. */
import type { Command } from '../command';
import { demo } from './demo';
import { inspect } from './inspect';

export const commands: Command[] = [demo, inspect];
