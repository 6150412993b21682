/**
 * Keeps cowshm's SIGSEGV/SIGBUS handlers in place. Snapshot write faults
 * arrive as SIGBUS (userfaultfd) or SIGSEGV (mprotect). `process.on('SIGBUS')`
 * makes libuv install its own handler over cowshm's, and removing the last
 * listener resets the signal to its default action: the first protected write
 * would then spin forever, or kill the process. Node installs or removes its
 * handler synchronously from its own 'newListener' / 'removeListener' hooks,
 * which were registered first, so by the time these run the change is made
 * and the addon can put its handler back in front, chaining to the new one.
 * `snapshot()` checks once more (native/signals.c, cowshm_signals_ensure).
 */
import { native } from './native';

const FAULT_SIGNALS: ReadonlySet<string | symbol> = new Set(['SIGBUS', 'SIGSEGV']);

function cowshmSignalListenerAdded(event: string | symbol): void {
  if (FAULT_SIGNALS.has(event)) native.signalsEnsure();
}

function cowshmSignalListenerRemoved(event: string | symbol): void {
  if (FAULT_SIGNALS.has(event)) native.signalsEnsure();
}

let hooked = false;

/** Installs the hooks on this thread's `process` (once). */
export function keepSignalHandlers(): void {
  if (hooked) return;
  hooked = true;
  process.on('newListener', cowshmSignalListenerAdded);
  process.on('removeListener', cowshmSignalListenerRemoved);
}
