/** Every sub-command, in the order `cowshm --help` lists them. */
import type { Command } from '../command';
import { doctorCommand } from './doctor';
import { checkpoint } from './checkpoint';

export const commands: Command[] = [doctorCommand, checkpoint];
