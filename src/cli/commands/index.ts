/** Every sub-command, in the order `cowshm --help` lists them. */
import type { Command } from '../command';
import { demo } from './demo';
import { doctorCommand } from './doctor';
import { inspect } from './inspect';
import { ls } from './ls';
import { rm } from './rm';

export const commands: Command[] = [ls, rm, demo, inspect, doctorCommand];
